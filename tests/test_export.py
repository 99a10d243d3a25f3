"""Exports: epoch CSV and runs CSV round-trips, weights files (round-trip, bad files, import, continue),
share-link query parameters, and the history summaries the runs table is made of."""
import csv
import io
import logging
import pickle
import threading
import zipfile

import numpy as np
import pytest
import torch

from history_helpers import EMPTY_DATA_DIR, SMALL, copy_store, sample_data
from core.config import ConfigError, Phase, RunConfig
from core.engine.evaluate import ModelLoadError, evaluate_weights
from core.runs.models import load_run_model
from core.exchange.export import (EPOCH_CSV_COLUMNS, WeightsFile, WeightsFileError, config_from_query, config_to_query,
                         epochs_csv, import_weights, is_share_query, read_epochs_csv, read_weights, run_epochs_csv,
                         run_weights, run_weights_bytes, schedule_to_query, share_from_query, table_csv, weights_bytes)
from core.runs.history import differing_fields, overlay_series, run_label, runs_table, smooth
from core.engine.model import build_mlp
from core.runs.training_run import TrainingRun
from core.runs.store import Store
from core.engine.train import median_timed_epoch


@pytest.fixture(scope="module")
def sample():
    return sample_data()


@pytest.fixture(scope="module")
def stored(sample, tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("export") / "runs.db")
    first = TrainingRun(SMALL.replace(optimizer="sgd_momentum", momentum=0.8), store=store, dataset=sample)
    first.run_schedule([Phase(2, 0.2), Phase(1, 0.05)])
    second = TrainingRun(SMALL.replace(optimizer="adam", lr=0.01, hidden_sizes=(20, 20)), store=store, dataset=sample)
    second.run_schedule([Phase(2, 0.01)])
    return store, first, second


# -- CSV ----------------------------------------------------------------------------------------------
def test_epoch_csv_round_trip_equals_the_stored_epochs(stored):
    store, run, _ = stored
    text = run_epochs_csv(store, run.id)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(EPOCH_CSV_COLUMNS)
    assert len(rows) == 3
    assert read_epochs_csv(text) == store.epochs(run.id)  # exact: floats are written with repr()
    for row in rows:
        assert row["run_id"] == run.id and row["status"] == "finished" and row["schedule"] == "2@0.2,1@0.05"
        assert row["config_optimizer"] == "sgd_momentum" and float(row["config_momentum"]) == 0.8
        assert row["config_hidden_sizes"] == "16" and row["config_dataset"] == "mnist"
        assert float(row["test_acc"]) == store.get_run(run.id)["test_acc"]
    assert [r["lr"] for r in rows] == ["0.2", "0.2", "0.05"]


def test_epoch_csv_of_a_run_without_epochs_has_just_the_header(stored):
    store = stored[0]
    run_id = store.create_run(RunConfig().to_dict(), device="cpu", data_source="", torch_version="", parameters=0)
    text = run_epochs_csv(store, run_id)
    assert text.strip() == ",".join(EPOCH_CSV_COLUMNS)
    assert read_epochs_csv(text) == []
    store.delete_run(run_id)


def test_runs_table_csv_round_trip(stored):
    store, first, second = stored
    rows = runs_table(store)
    parsed = list(csv.DictReader(io.StringIO(table_csv(rows))))
    assert [p["run_id"] for p in parsed] == [second.id, first.id]  # newest first
    for row, back in zip(rows, parsed):
        assert set(back) == set(row)
        for key, value in row.items():
            if isinstance(value, float):
                assert float(back[key]) == value
            elif isinstance(value, bool):
                assert back[key] == ("true" if value else "false")
            else:
                assert back[key] == ("" if value is None else str(value))
    by_id = {r["run_id"]: r for r in rows}
    assert by_id[first.id]["lr_schedule"] == "2@0.2,1@0.05" and by_id[first.id]["epochs"] == 3
    assert by_id[second.id]["hidden_sizes"] == "20-20" and by_id[second.id]["layers"] == 2
    assert by_id[first.id]["best_val_acc"] == max(e.val_acc for e in first.epochs)
    assert by_id[first.id]["final_val_acc"] == first.epochs[-1].val_acc
    assert by_id[first.id]["test_acc"] == first.test_acc
    assert by_id[first.id]["median_epoch_s"] == median_timed_epoch(store.epochs(first.id))
    assert by_id[first.id]["weights_kept"] is True and by_id[first.id]["status"] == "finished"


# -- weights files ------------------------------------------------------------------------------------
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
    from core.exchange.export import check_run_section
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


# -- share links --------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [
    RunConfig(),
    RunConfig(dataset="cifar10", hidden_sizes=(512, 256, 128), activation="gelu", batch_size=1000, lr=0.00123,
              epochs=40, optimizer="sgd_momentum", momentum=0.95, weight_decay=1e-4, device="cpu", seed=123456789,
              val_fraction=0.1, pipeline="dataloader"),
    RunConfig(lr=1 / 3, hidden_sizes=(7,)),
])
def test_share_query_round_trip(config):
    query = config_to_query(config)
    assert all(isinstance(v, str) for v in query.values())
    assert is_share_query(query)
    back = config_from_query(query)
    assert back == config.replace(threads=None)


def test_share_query_is_short_for_defaults_and_ignores_other_parameters():
    query = config_to_query(RunConfig())
    assert set(query) == {"dataset", "hidden", "activation", "batch", "lr", "epochs", "optimizer", "device", "seed",
                          "pipeline"}
    assert not is_share_query({"run": "abc"})
    assert config_from_query({"run": "abc", "lr": "0.1", "hidden": ["32", "64"]}) == RunConfig(lr=0.1,
                                                                                             hidden_sizes=(64,))


def test_invalid_share_query_names_every_bad_value():
    with pytest.raises(ConfigError) as info:
        config_from_query({"lr": "nan", "batch": "0", "activation": "swish", "hidden": "a,b", "epochs": "2.5",
                           "device": "tpu", "momentum": "1.5", "dataset": "mnist"})
    message = str(info.value)
    for fragment in ("lr='nan'", "batch='0'", "activation='swish'", "hidden='a,b'", "epochs='2.5'", "device='tpu'",
                     "momentum='1.5'"):
        assert fragment in message
    assert "dataset" not in message


def test_a_schedule_travels_as_then_after_the_first_phase():
    config = RunConfig(epochs=5, lr=0.5)
    phases = (Phase(5, 0.5), Phase(5, 0.1), Phase(3, 1 / 30))
    query = {**config_to_query(config), **schedule_to_query(phases)}
    assert query["then"].startswith("5@0.1,3@")
    assert share_from_query(query) == (config.replace(threads=None), phases[1:])
    assert schedule_to_query(phases[:1]) == {}
    assert share_from_query(config_to_query(config))[1] == ()
    assert is_share_query({"then": "5@0.1"})


@pytest.mark.parametrize("hidden, says", [("-64", "must be from 1 to 8192; got -64"), ("64,-8", "got -8"),
                                          ("32,,64", "empty size"), ("0x40", "not a whole number")])
def test_a_share_link_width_is_read_exactly_or_refused(hidden, says):
    with pytest.raises(ConfigError) as info:  # before: '-64' was read as 64 ('-' joined sizes), '32,,64' as 32,64
        config_from_query({"hidden": hidden})
    assert f"hidden={hidden!r}: " in str(info.value) and says in str(info.value), str(info.value)
    assert config_from_query({"hidden": "128-64"}).hidden_sizes == (128, 64)  # the CSV's form still reads


@pytest.mark.parametrize("then", ["5", "5@x", "0@0.1", "5@-1"])
def test_a_bad_schedule_in_a_link_is_reported_with_the_other_bad_values(then):
    with pytest.raises(ConfigError) as info:
        share_from_query({"lr": "nan", "then": then})
    assert f"then={then!r}" in str(info.value) and "lr='nan'" in str(info.value)


# -- history summaries --------------------------------------------------------------------------------
def test_smoothing_and_labels():
    assert smooth([1.0, 2.0, None, 4.0], 0.0) == [1.0, 2.0, None, 4.0]
    smoothed = smooth([1.0, 3.0], 0.5)
    assert smoothed == [1.0, pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)]
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)
    a = {"id": "aaaaaa111", "config": SMALL.to_dict(), "schedule": [[2, 0.5], [1, 0.1]]}
    b = {"id": "bbbbbb222", "config": SMALL.replace(hidden_sizes=(64,), lr=0.1).to_dict(), "schedule": [[2, 0.1]]}
    fields = differing_fields([a["config"], b["config"]])
    assert fields == ["hidden_sizes", "lr"]
    assert run_label(a, fields) == "aaaaaa · hidden 16 · lr 2@0.5,1@0.1"
    assert run_label(b, fields) == "bbbbbb · hidden 64 · lr 0.1"
    series = overlay_series([a, b], {"aaaaaa111": [{"epoch": 1, "elapsed": 0.5, "val_loss": 1.0, "val_acc": 0.5,
                                                    "train_loss": 2.0}]}, x="elapsed")
    assert series[0]["x"] == [0.5] and series[1]["x"] == []
    assert median_timed_epoch([{"seconds": 9.0, "warmup": True}, {"seconds": 1.0, "warmup": False},
                                 {"seconds": 3.0, "warmup": False}]) == 2.0
    assert median_timed_epoch([{"seconds": 9.0, "warmup": True}]) == 9.0
    assert median_timed_epoch([]) is None


def test_epochs_csv_of_a_live_run_record(stored):
    store, run, _ = stored
    row = store.get_run(run.id)
    text = epochs_csv(row, [e.to_dict() for e in run.epochs])  # EpochResult dicts carry a device too
    assert read_epochs_csv(text) == store.epochs(run.id)


def test_concurrent_exports_while_training(sample, tmp_path):
    """Exporting reads a consistent picture while another thread is writing epochs."""
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(SMALL, store=store, dataset=sample)
    errors = []
    done = threading.Event()

    def export_loop():
        while not done.is_set():
            try:
                read_epochs_csv(run_epochs_csv(store, run.id))
                table_csv(runs_table(store))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    reader = threading.Thread(target=export_loop)
    reader.start()
    try:
        run.train_phase(3, 0.5)
    finally:
        done.set()
        reader.join()
    assert not errors
    assert read_epochs_csv(run_epochs_csv(store, run.id)) == store.epochs(run.id)
