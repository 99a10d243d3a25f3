"""`python -m core train` when its run cannot be fully recorded, or when it is told to stop.

A run the database could not take says so on stderr when it happens and exits 3 (trained, not
recorded); a full disk at the final write keeps the status and metrics (written before the weights
blob); SIGTERM records the run as interrupted with its last finished epoch's weights.
"""
from __future__ import annotations

import io
import json
import signal
from types import SimpleNamespace

import pytest
import torch

from support import cli_environment, start_cli
from history_helpers import EMPTY_DATA_DIR
from core.cli import EXIT_NOT_RECORDED, main
from core.config import RunConfig
from core.runs.training_run import TrainingRun
from core.runs.store import Store

pytestmark = [pytest.mark.usefixtures("restore_sigterm"), pytest.mark.slow]  # CLI subprocesses
TRAIN = ["train", "--data-dir", str(EMPTY_DATA_DIR), "--device", "cpu", "--threads", "1", "--batch-size", "200"]


@pytest.fixture
def restore_sigterm():
    previous = signal.getsignal(signal.SIGTERM)  # cmd_train installs its own SIGTERM handler
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def sqlite_faults(monkeypatch):
    """SQLite's own errors on every connection a Store opens: read-only (query_only), disk full (max_page_count)."""
    faults = SimpleNamespace(read_only_from_epoch=None, pages_left=None, read_only=False)
    connect, add_epoch = Store._connect, Store.add_epoch

    def faulty_connect(store):
        db = connect(store)
        if faults.read_only:
            db.execute("PRAGMA query_only=1")
        if faults.pages_left is not None:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages + faults.pages_left}")
        return db

    def add_epoch_then_fault(store, run_id, record):
        if faults.read_only_from_epoch is not None and record["epoch"] >= faults.read_only_from_epoch:
            faults.read_only = True
        return add_epoch(store, run_id, record)

    monkeypatch.setattr(Store, "_connect", faulty_connect)
    monkeypatch.setattr(Store, "add_epoch", add_epoch_then_fault)
    return faults


def test_a_database_turned_read_only_mid_run_is_said_on_stderr_and_exits_3(tmp_path, capsys, sqlite_faults):
    db = tmp_path / "runs.db"
    sqlite_faults.read_only_from_epoch = 2
    code = main([*TRAIN, "--db", str(db), "--hidden", "16", "--epochs", "3"])
    captured = capsys.readouterr()
    assert code == EXIT_NOT_RECORDED  # before: 0, as if the run had been recorded
    summary = json.loads(captured.out.splitlines()[-1])
    assert summary["status"] == "finished" and "NOT being saved after epoch 1" in summary["store_warning"]
    err = captured.err.splitlines()
    said = [i for i, line in enumerate(err) if line.startswith("warning: This run is NOT being saved")]
    assert said and said[0] < next(i for i, line in enumerate(err) if line.startswith("epoch   2"))  # when it happened
    assert "attempt to write a readonly database" in err[said[0]] and "writable" in err[said[0]]
    sqlite_faults.read_only, sqlite_faults.read_only_from_epoch = False, None
    assert [e["epoch"] for e in Store(db).epochs(summary["run_id"])] == [1]


def test_disk_full_at_the_final_write_exits_3_with_status_and_metrics_stored(tmp_path, capsys, sqlite_faults):
    db = tmp_path / "runs.db"
    sqlite_faults.pages_left = 20  # 80 KB: rows fit, the weights (1.6 MB) do not
    code = main([*TRAIN, "--db", str(db), "--hidden", "512", "--epochs", "2"])
    captured = capsys.readouterr()
    assert code == EXIT_NOT_RECORDED, captured.err  # before: 0
    summary = json.loads(captured.out.splitlines()[-1])
    assert "warning: This run's weights are NOT saved" in captured.err and "free disk space" in captured.err
    sqlite_faults.pages_left = None
    row = Store(db).get_run(summary["run_id"])
    # before: "running", no test accuracy (the failed blob write went first and ended all writing)
    assert row["status"] == "finished" and row["test_acc"] == summary["test_acc"]
    assert len(Store(db).epochs(summary["run_id"])) == 2 and Store(db).load_checkpoint(summary["run_id"]) is None


def test_a_real_nearly_full_disk_at_the_final_write(small_disk, tmp_path):
    db = small_disk.path / "runs.db"
    Store(db)
    small_disk.fill()
    proc = start_cli([*TRAIN, "--db", str(db), "--hidden", "512", "--epochs", "2"], cli_environment(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_NOT_RECORDED, err
    assert "database or disk is full" in err and "free disk space" in err
    summary = json.loads(out.splitlines()[-1])
    small_disk.free()
    row = Store(db).get_run(summary["run_id"])
    assert row["status"] == "finished" and row["test_acc"] == summary["test_acc"]


def saved_epoch(store: Store, run_id: str) -> int:
    return torch.load(io.BytesIO(store.load_checkpoint(run_id)), weights_only=True)["epochs_done"]


def test_sigterm_records_interrupted_with_the_last_finished_epochs_weights(tmp_path):
    db = tmp_path / "runs.db"
    config = RunConfig(hidden_sizes=(64,), device="cpu", threads=1)
    proc = start_cli(["train", "--data-dir", str(EMPTY_DATA_DIR), "--db", str(db), "--hidden", "64",
                      "--epochs", "500", "--device", "cpu", "--threads", "1"], cli_environment(tmp_path))
    try:
        for _ in range(2):
            assert json.loads(proc.stdout.readline())["epoch"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    run_id = json.loads(out.splitlines()[-1])["run_id"]
    store = Store(db)
    row = store.get_run(run_id)
    assert row["status"] == "interrupted" and row["message"] == "stopped by SIGTERM"
    kept = len(store.epochs(run_id))
    # before: the weights of a half-trained epoch were kept, so continuing did not match an unbroken run
    assert saved_epoch(store, run_id) == kept
    resumed = TrainingRun.resume(run_id, store, data_dir=EMPTY_DATA_DIR)
    resumed.train_phase(1, config.lr)
    reference = TrainingRun(config, data_dir=EMPTY_DATA_DIR)
    reference.train_phase(kept + 1, config.lr)
    got, want = resumed.epochs[-1], reference.epochs[-1]
    assert got.epoch == want.epoch == kept + 1
    assert (got.train_loss, got.val_loss) == (want.train_loss, want.val_loss)
