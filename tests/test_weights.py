"""Weights files (core.exchange.weights): round-trip, bad files, import, continue."""
import io
import logging
import pickle
import zipfile

import numpy as np
import pytest
import torch

from exchange_helpers import stored_runs
from history_helpers import EMPTY_DATA_DIR, SMALL, copy_store, sample_data
from core.engine.evaluate import ModelLoadError, evaluate_weights
from core.runs.models import load_run_model
from core.exchange.weights import (WeightsFile, WeightsFileError, import_weights, read_weights, run_weights,
                                   run_weights_bytes, weights_bytes)
from core.runs.history import runs_table
from core.engine.model import build_mlp
from core.runs.training_run import TrainingRun
from core.runs.store import Store


@pytest.fixture(scope="module")
def sample():
    return sample_data()


@pytest.fixture(scope="module")
def stored(sample, tmp_path_factory):
    return stored_runs(tmp_path_factory.mktemp("weights") / "runs.db", sample)


def test_weights_round_trip_gives_the_same_test_accuracy(stored, sample):
    store, run, _ = stored
    blob = run_weights_bytes(store, run.id)  # what the Download button serves
    loaded = read_weights(blob)  # what the upload reads
    assert loaded.config == run.config
    assert loaded.run["id"] == run.id and loaded.epochs == store.epochs(run.id)
    original = load_run_model(store, run.id)
    for name, tensor in original.state_dict.items():
        assert torch.equal(loaded.state_dict[name], tensor)
    before = evaluate_weights(original.config, original.state_dict, dataset=sample)
    after = evaluate_weights(loaded.config, loaded.state_dict, dataset=sample)
    assert after.accuracy == pytest.approx(before.accuracy, abs=1e-6)
    assert after.accuracy == pytest.approx(run.test_acc, abs=1e-6)
    # a plain torch.load reads it too, without unpickling code
    plain = torch.load(io.BytesIO(blob), weights_only=True)
    assert plain["config"]["hidden_sizes"] == [16] and set(plain["state_dict"]) == {"0.weight", "0.bias",
                                                                                    "2.weight", "2.bias"}


def test_imported_weights_continue_exactly_like_the_original(stored, sample, tmp_path):
    store, run, _ = stored
    store = Store(copy_store(store.path, tmp_path / "original.db"))  # continuing must not change the module's store
    other = Store(tmp_path / "other.db")
    imported = import_weights(other, read_weights(run_weights_bytes(store, run.id)), test_acc=run.test_acc)
    record = other.get_run(imported)
    assert record["origin"] == "upload" and record["status"] == "finished" and run.id in record["message"]
    assert other.epochs(imported) == store.epochs(run.id)
    assert record["schedule"] == [[2, 0.2], [1, 0.05]]

    original = TrainingRun.resume(run.id, store, data_dir=EMPTY_DATA_DIR)
    copy = TrainingRun.resume(imported, other, data_dir=EMPTY_DATA_DIR)
    original.train_phase(1, 0.05)
    copy.train_phase(1, 0.05)
    assert copy.epochs[-1].epoch == original.epochs[-1].epoch == 4
    # same weights, optimizer state (momentum buffers) and batch order: the same next epoch
    assert copy.epochs[-1].val_loss == original.epochs[-1].val_loss
    assert copy.epochs[-1].train_loss == original.epochs[-1].train_loss


def test_weights_without_history_can_be_imported_with_a_fresh_optimizer(sample, tmp_path):
    config = SMALL.replace(optimizer="adam", lr=0.01)
    model = build_mlp(config, 784, 10)
    blob = weights_bytes(WeightsFile(config, model.state_dict()))
    store = Store(tmp_path / "runs.db")
    run_id = import_weights(store, read_weights(blob))
    assert store.epochs(run_id) == [] and store.get_run(run_id)["status"] == "stopped"
    resumed = TrainingRun.resume(run_id, store, data_dir=EMPTY_DATA_DIR)  # the checkpoint is complete
    resumed.train_phase(1, 0.01)
    assert resumed.epochs[-1].epoch == 1


def test_stopped_run_exports_only_the_epochs_its_weights_have(stored, sample, tmp_path):
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(SMALL, store=store, dataset=sample)
    run.train_phase(1, 0.5)
    store.add_epoch(run.id, {**run.epochs[0].to_dict(), "epoch": 2})  # an epoch after the last checkpoint
    weights = run_weights(store, run.id)
    assert [e["epoch"] for e in weights.epochs] == [1]
    assert weights.training_state["epochs_done"] == 1


def corrupt_files(blob):
    config = SMALL.replace(hidden_sizes=(32,))
    mismatched = io.BytesIO()
    torch.save({"config": config.to_dict(), "state_dict": build_mlp(SMALL, 784, 10).state_dict()}, mismatched)
    bare = io.BytesIO()
    torch.save(build_mlp(SMALL, 784, 10).state_dict(), bare)
    bad_config = io.BytesIO()
    torch.save({"config": {**SMALL.to_dict(), "lr": -1.0}, "state_dict": build_mlp(SMALL, 784, 10).state_dict()},
               bad_config)
    unknown = io.BytesIO()
    torch.save({"config": {**SMALL.to_dict(), "colour": "red"}, "state_dict": {}}, unknown)
    module = io.BytesIO()
    torch.save(build_mlp(SMALL, 784, 10), module)  # a pickled nn.Module: refused, never unpickled
    future = io.BytesIO()
    torch.save({"version": 99, "config": SMALL.to_dict(), "state_dict": {}}, future)
    listed = io.BytesIO()
    torch.save([1, 2, 3], listed)
    return [
        (b"", "is empty"),
        (b"hello, not a model", "not a PyTorch weights file"),
        (blob[: len(blob) // 2], "truncated or damaged"),
        (blob[:-200] + bytes(200), "truncated or damaged"),
        (mismatched.getvalue(), "wrong shapes for its own 784-32-10 model"),
        (bare.getvalue(), "bare state_dict without its config"),
        (bad_config.getvalue(), "config is invalid: lr"),
        (unknown.getvalue(), "unknown setting.*colour"),
        (module.getvalue(), "other than tensors and plain data"),
        (future.getvalue(), "format version 99"),
        (listed.getvalue(), "holds a list"),
    ]


def test_a_runs_own_checkpoint_without_a_run_section_still_loads(stored):
    store, run, _ = stored
    loaded = read_weights(store.load_checkpoint(run.id))  # Trainer.checkpoint's format: config, model, optimizer
    assert loaded.config == run.config and loaded.run == {"schedule": []}
    assert loaded.training_state["epochs_done"] == 3


def test_a_downloaded_file_reads_back_checked_and_unchanged(stored):
    store, run, _ = stored
    loaded = read_weights(run_weights_bytes(store, run.id))
    row = store.get_run(run.id)
    assert loaded.run["schedule"] == row["schedule"] == [[2, 0.2], [1, 0.05]]
    assert {k: loaded.run[k] for k in ("id", "status", "device", "data_source")} == \
        {k: row[k] for k in ("id", "status", "device", "data_source")}
    assert loaded.run["test_acc"] == row["test_acc"] and loaded.epochs == store.epochs(run.id)


def test_every_run_the_app_records_passes_the_checks_uploads_and_stored_rows_go_through(stored):
    from core.runs.records import check_run_section
    from core.runs.history import run_problem

    store = stored[0]
    assert [row["problem"] for row in runs_table(store)] == ["", ""]
    for run in store.list_runs():
        assert run_problem(run, store.epochs(run["id"])) == ""
    assert check_run_section({"test_loss": float("inf")})["test_loss"] == float("inf")  # overflowed logits
    for bad in ({"test_loss": float("nan")}, {"created_at": float("inf")}, {"test_acc": 1.5}):
        with pytest.raises(ValueError):
            check_run_section(bad)


def test_bad_weights_files_get_a_clear_error(stored):
    store, run, _ = stored
    for data, message in corrupt_files(run_weights_bytes(store, run.id)):
        with pytest.raises(WeightsFileError, match=message):
            read_weights(data, name="upload.pt")


def crafted_upload_files(blob: bytes) -> dict[str, tuple[bytes, str]]:
    """Real files a user might pick by mistake: {what: (bytes, what the one sentence must say)}."""
    not_torch_zip = io.BytesIO()
    with zipfile.ZipFile(not_torch_zip, "w") as archive:
        archive.writestr("notes/readme.txt", "holiday photos")
    torch_like_zip = io.BytesIO()  # torch's layout, without its records
    with zipfile.ZipFile(torch_like_zip, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0xFF  # one byte inside the tensor data
    wrong_shapes = io.BytesIO()
    torch.save({"config": SMALL.replace(hidden_sizes=(32,)).to_dict(),
                "state_dict": build_mlp(SMALL, 784, 10).state_dict()}, wrong_shapes)
    legacy = io.BytesIO()
    torch.save({"config": SMALL.to_dict()}, legacy, _use_new_zipfile_serialization=False)
    return {
        "random bytes": (np.random.default_rng(0).bytes(4096), "is not a PyTorch weights file"),
        "random bytes after a zip signature": (b"PK\x03\x04" + np.random.default_rng(1).bytes(4096),
                                               "is truncated or damaged"),
        "truncated by 3,212 bytes": (blob[:-3212], "is truncated or damaged"),  # was "negative seek value"
        "truncated to 100 bytes": (blob[:100], "is truncated or damaged"),
        "one byte flipped": (bytes(flipped), "is damaged"),
        "a zip that is not a torch file": (not_torch_zip.getvalue(),
                                           "is a zip archive, but not a PyTorch weights file"),
        "a zip in torch's layout without its records": (torch_like_zip.getvalue(), "not a PyTorch weights file"),
        "wrong shapes for its model": (wrong_shapes.getvalue(), "wrong shapes for its own 784-32-10 model"),
        "a pickle": (pickle.dumps({"config": SMALL.to_dict()}), "is a Python pickle"),
        "a pickled object": (pickle.dumps(SMALL), "is a Python pickle"),
        "torch.save's old pickle format": (legacy.getvalue(), "is a Python pickle"),
    }


INTERNALS = ("seek", "enforce", "inline_container", "Error", "hasRecord", "miniz", "(Could", "CRC", "0.weight")


def test_unusable_uploads_get_one_plain_sentence_and_the_details_go_to_the_log(stored, caplog):
    store, run, _ = stored
    for what, (data, says) in crafted_upload_files(run_weights_bytes(store, run.id)).items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core"):
            with pytest.raises(WeightsFileError) as info:
                read_weights(data, name="'model.pt'")
        message = str(info.value)
        assert message.startswith("'model.pt' ") and says in message, (what, message)
        assert not any(word in message for word in INTERNALS), (what, message)  # before: torch's own words
        assert message.count(". ") == 0 and "\n" not in message, (what, message)  # one sentence
        if "damaged" in message or "wrong shapes" in message:
            assert caplog.text.strip(), f"{what}: no details in the log"


def test_a_damaged_stored_checkpoint_says_so_plainly(stored, caplog, tmp_path):
    _, run, _ = stored
    store = Store(copy_store(stored[0].path, tmp_path / "copy.db"))  # the module's store stays intact
    store.save_checkpoint(run.id, store.load_checkpoint(run.id)[:-3212])
    with caplog.at_level(logging.WARNING, logger="core"), pytest.raises(ModelLoadError) as info:
        run_weights(store, run.id)
    assert "damaged" in str(info.value) and "seek" not in str(info.value)
    assert "seek" in caplog.text or "zip" in caplog.text
