"""Epoch CSV and runs CSV round-trips (core.exchange.csv_export), and the history summaries the runs table is
made of."""
import csv
import io
import threading

import pytest

from exchange_helpers import stored_runs
from history_helpers import SMALL, sample_data
from core.config import RunConfig
from core.exchange.csv_export import EPOCH_CSV_COLUMNS, epochs_csv, read_epochs_csv, run_epochs_csv, table_csv
from core.runs.history import differing_fields, overlay_series, run_label, runs_table, smooth
from core.runs.training_run import TrainingRun
from core.runs.store import Store
from core.engine.train import median_timed_epoch


@pytest.fixture(scope="module")
def sample():
    return sample_data()


@pytest.fixture(scope="module")
def stored(sample, tmp_path_factory):
    return stored_runs(tmp_path_factory.mktemp("csv") / "runs.db", sample)


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
    assert median_timed_epoch([{"seconds": 9.0, "warmup": True}], warmup_fallback=False) is None
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
