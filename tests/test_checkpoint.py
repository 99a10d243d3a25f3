"""core.engine.checkpoint: the one format of a run's stored weights, and checkpoints saved before it existed."""
import io

import pytest
import torch

from support import synthetic_dataset
from core.config import ModelLoadError, RunConfig
from core.engine import checkpoint
from core.engine.train import Trainer

KEYS = {"config", "model", "optimizer", "epochs_done", "phases_done", "elapsed", "batch_generator"}


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset(600, 100)


def old_format_blob(trainer: Trainer) -> bytes:
    """A checkpoint as Trainer.checkpoint wrote it before core.engine.checkpoint: the dict spelled out."""
    buffer = io.BytesIO()
    torch.save({"config": trainer.config.to_dict(),
                "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
                "optimizer": trainer.optimizer.state_dict(), "epochs_done": trainer.epochs_done,
                "phases_done": trainer.phases_done, "elapsed": trainer.elapsed,
                "batch_generator": trainer.batch_generator.get_state()}, buffer)
    return buffer.getvalue()


def test_a_checkpoint_holds_exactly_the_documented_entries(data):
    trainer = Trainer(RunConfig(device="cpu", hidden_sizes=(16,), optimizer="adam", lr=0.01), data)
    list(trainer.train(1))
    stored = torch.load(io.BytesIO(trainer.checkpoint()), weights_only=True)
    assert set(stored) == KEYS
    assert stored["epochs_done"] == 1 and stored["phases_done"] == 1 and stored["elapsed"] == trainer.elapsed
    assert RunConfig.from_dict(stored["config"]) == trainer.config
    assert set(stored["optimizer"]) == {"steps", "exp_avg", "exp_avg_sq"}


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.5), ("sgd_momentum", 0.05), ("adam", 0.003)])
def test_a_checkpoint_in_the_earlier_spelled_out_format_continues_exactly(data, optimizer, lr):
    config = RunConfig(device="cpu", hidden_sizes=(16,), optimizer=optimizer, lr=lr)
    original = Trainer(config, data)
    list(original.train(2))
    blob = old_format_blob(original)
    expected = [(e.train_loss, e.val_loss) for e in original.train(1)]
    restored = Trainer(config, data)
    restored.restore(blob)
    assert (restored.epochs_done, restored.phases_done) == (2, 1)
    assert [(e.train_loss, e.val_loss) for e in restored.train(1)] == expected
    stored_config, weights, rest = checkpoint.read_weights(blob)
    assert stored_config == config and set(weights) == set(original.model.state_dict())
    assert set(rest) == KEYS - {"config", "model"}


def test_a_state_copy_keeps_its_moment_while_training_goes_on(data):
    trainer = Trainer(RunConfig(device="cpu", hidden_sizes=(16,)), data)
    list(trainer.train(1))
    kept = trainer.state(copy=True)
    before = {k: v.clone() for k, v in kept["model"].items()}
    list(trainer.train(1))
    assert all(torch.equal(before[k], kept["model"][k]) for k in before)
    assert kept["epochs_done"] == 1


def test_bytes_that_are_not_a_checkpoint_say_so_plainly():
    with pytest.raises(ModelLoadError, match="damaged"):
        checkpoint.read_weights(b"not a checkpoint")


def test_is_checkpoint_tells_a_checkpoint_from_a_weights_file():
    assert checkpoint.is_checkpoint({"config": {}, "model": {}})
    assert not checkpoint.is_checkpoint({"config": {}, "state_dict": {}, "model": {}})
    assert not checkpoint.is_checkpoint([1])
