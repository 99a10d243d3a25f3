"""The run database failing under a running run: read-only, disk full, emptied or deleted mid-run.

Training never stops for the store. Every fault is said on the run (store_warning: what is not
saved, why, how to fix it), writes that failed are retried at the next write (a store that works
again catches up without a restart), and rows go before the weights blob, so a full disk loses only
the blob. Faults come from SQLite itself on real files: PRAGMA query_only gives its read-only error,
PRAGMA max_page_count its disk-full error; where this process may mount, a real small tmpfs is
remounted read-only or filled.
"""
from __future__ import annotations

import threading
from multiprocessing import Pipe
from types import SimpleNamespace

import pytest

from history_helpers import EMPTY_DATA_DIR
from core.config import Phase, RunConfig
from core.runs.manager import RunManager
from core.runs.training_run import TrainingRun
from core.runs.store import Store
from core.engine.train import FINISHED
from core.runs.worker import serve
from support import wait_for

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

CONFIG = RunConfig(hidden_sizes=(64,), batch_size=200, device="cpu", threads=1)
WIDE = CONFIG.replace(hidden_sizes=(512,))  # weights of 1.6 MB: more than a nearly full disk takes


@pytest.fixture
def sqlite_faults(monkeypatch):
    """Faults set on every connection a Store opens from now on (each write opens its own)."""
    faults = SimpleNamespace(read_only=False, pages_left=None)
    connect = Store._connect

    def faulty_connect(store):
        db = connect(store)
        if faults.read_only:  # SQLite: "attempt to write a readonly database"
            db.execute("PRAGMA query_only=1")
        if faults.pages_left is not None:  # SQLite: "database or disk is full" for writes that need more pages
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages + faults.pages_left}")
        return db

    monkeypatch.setattr(Store, "_connect", faulty_connect)
    return faults




# -- TrainingRun ------------------------------------------------------------------------------------------------
def test_a_store_turned_read_only_mid_run_warns_then_catches_up_when_writable(tmp_path, sqlite_faults, sample):
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(CONFIG, store=store, dataset=sample)
    warnings = []
    run.on_store_warning = warnings.append

    def on_epoch(result):
        sqlite_faults.read_only = result.epoch in (1, 2)  # epochs 2 and 3 meet a read-only file

    assert run.run_schedule([Phase(4, 0.5)], on_epoch=on_epoch) == FINISHED
    # before: the run stopped writing for good at epoch 2 ("no longer being saved") and kept only epoch 1
    assert [e["epoch"] for e in store.epochs(run.id)] == [1, 2, 3, 4]
    row = store.get_run(run.id)
    assert row["status"] == FINISHED and row["test_acc"] == run.test_acc and store.load_checkpoint(run.id)
    assert len(warnings) == 2 and warnings[1] == "" and run.store_warning == ""  # said once, cleared once caught up
    assert "NOT being saved after epoch 1" in warnings[0] and "attempt to write a readonly database" in warnings[0]
    assert f"make {tmp_path.resolve()} and the files in it writable" in warnings[0] and "RUNS_DB" in warnings[0]


def test_disk_full_at_the_final_write_keeps_the_status_and_metrics_and_only_the_blob_is_lost(
        tmp_path, sqlite_faults, sample, monkeypatch):
    store = Store(tmp_path / "runs.db")
    sqlite_faults.pages_left = 20  # 80 KB: rows fit, 1.6 MB of weights do not
    run = TrainingRun(WIDE, store=store, dataset=sample)
    assert run.train_phase(2, 0.5) == FINISHED
    assert "weights are NOT saved" in run.store_warning and "database or disk is full" in run.store_warning
    assert "free disk space" in run.store_warning
    row = store.get_run(run.id)
    # before: the blob went first, its failure dropped the store, and the run stayed "running" without a result
    assert row["status"] == FINISHED and row["test_acc"] == run.test_acc and row["test_loss"] == run.test_loss
    assert [e["epoch"] for e in store.epochs(run.id)] == [1, 2] and store.load_checkpoint(run.id) is None

    sqlite_faults.pages_left = None  # space freed: the same store works, no restart
    assert run.train_phase(1, 0.1) == FINISHED
    assert run.store_warning == "" and store.load_checkpoint(run.id)
    monkeypatch.setattr("core.runs.training_run.load_dataset", lambda name, data_dir=None, **kwargs: sample)
    assert [e.epoch for e in TrainingRun.resume(run.id, store).epochs] == [1, 2, 3]


def test_a_database_emptied_mid_run_gets_the_whole_run_back(tmp_path, sample):
    db = tmp_path / "runs.db"
    store = Store(db)
    run = TrainingRun(CONFIG, store=store, dataset=sample)

    def on_epoch(result):
        if result.epoch == 2:
            db.write_bytes(b"")  # truncated (or deleted and recreated) under the running run

    assert run.run_schedule([Phase(4, 0.5)], on_epoch=on_epoch) == FINISHED
    assert run.store_warning == ""
    assert [e["epoch"] for e in store.epochs(run.id)] == [1, 2, 3, 4]
    assert store.get_run(run.id)["status"] == FINISHED and store.load_checkpoint(run.id)


# -- the worker and the manager ---------------------------------------------------------------------------------
def start_worker(db):
    ours, theirs = Pipe()
    worker = threading.Thread(target=serve, args=(theirs, str(EMPTY_DATA_DIR), str(db), 1, None), daemon=True)
    worker.start()
    assert ours.recv() == ("ready",)
    return ours, worker


def messages_until_done(conn) -> list[tuple]:
    seen = []
    while not seen or seen[-1][0] not in ("done", "error"):
        seen.append(conn.recv())
    return seen


def body(seen: list[tuple], kind: str):
    return next(m[1] for m in seen if m[0] == kind)


def test_the_worker_tells_the_page_at_once_when_the_store_turns_read_only(tmp_path, sqlite_faults):
    db = tmp_path / "runs.db"
    conn, worker = start_worker(db)
    conn.send(("start", "ro0mid0run", CONFIG.to_dict(), [(6, 0.5)]))
    seen = []
    while not any(m[0] == "epoch" for m in seen):
        seen.append(conn.recv())
    sqlite_faults.read_only = True
    seen += messages_until_done(conn)
    conn.send(("close",))
    worker.join(10)
    kinds = [m[0] for m in seen]
    # before: no word until "done", whose warning said only "no longer being saved"
    first = kinds.index("store")
    assert kinds.index("done") > first and kinds[first + 1:].count("epoch") >= 4
    assert "NOT being saved after epoch 1" in seen[first][1] and "writable" in seen[first][1]
    assert kinds.count("store") == 1  # said once, not once per epoch
    assert seen[-1][0] == "done" and seen[-1][-1] == seen[first][1]


def test_a_worker_that_could_not_open_the_store_says_each_run_is_not_saved(tmp_path):
    (tmp_path / "plain-file").write_text("x")
    db = tmp_path / "plain-file" / "runs.db"  # a file where the folder should be: the store cannot open
    conn, worker = start_worker(db)
    conn.send(("start", "no0store", CONFIG.to_dict(), [(1, 0.5)]))
    seen = messages_until_done(conn)
    created = body(seen, "created")
    # before: the worker went on without a store and said nothing; the run was silently not recorded
    assert "This run is NOT saved" in created["store_warning"] and str(db) in created["store_warning"]
    assert "RUNS_DB" in created["store_warning"] and seen[-1][-1] == created["store_warning"]

    (tmp_path / "plain-file").unlink()  # fixed: the same worker records the next run, no restart
    conn.send(("start", "store0back", CONFIG.to_dict(), [(1, 0.5)]))
    seen = messages_until_done(conn)
    conn.send(("close",))
    worker.join(10)
    assert body(seen, "created")["store_warning"] == "" and seen[-1][1] == FINISHED
    assert Store(db).get_run("store0back")["status"] == FINISHED


@pytest.fixture
def manager_on(tmp_path):
    managers = []

    def make(db):
        managers.append(RunManager(db_path=db, data_dir=EMPTY_DATA_DIR, cpu_threads=1))
        return managers[-1]

    yield make
    for manager in managers:
        manager.shutdown()


@pytest.mark.parametrize("fault", ["truncated", "deleted"])
def test_a_database_file_lost_mid_run_is_recorded_again_by_the_worker(tmp_path, manager_on, fault):
    db = tmp_path / "runs.db"
    manager = manager_on(db)
    run_id = manager.start(CONFIG.replace(epochs=500))
    wait_for(lambda: len(manager.snapshot(run_id).epochs) >= 2)
    if fault == "truncated":
        db.write_bytes(b"")
    else:
        db.unlink()
    seen = len(manager.snapshot(run_id).epochs)
    wait_for(lambda: len(manager.snapshot(run_id).epochs) >= seen + 2)
    manager.stop(run_id)
    snap = wait_for(lambda: (s := manager.snapshot(run_id)) and not s.active and s)
    assert snap.status == "stopped"
    if snap.store_warning:  # cut while SQLite had the file open (a WAL half applied): damaged, and said so
        assert "NOT being saved" in snap.store_warning, snap.store_warning
        return
    store = Store(db)  # else (most of the time) the worker recorded the whole run again
    assert [e["epoch"] for e in store.epochs(run_id)] == [e.epoch for e in snap.epochs]
    assert store.get_run(run_id)["status"] == "stopped"


def test_a_real_disk_turned_read_only_then_full_is_reported_on_the_run_and_needs_no_restart(small_disk, manager_on):
    db = small_disk.path / "runs.db"
    manager = manager_on(db)
    run_id = manager.start(WIDE.replace(epochs=500))
    wait_for(lambda: len(manager.snapshot(run_id).epochs) >= 1)

    small_disk.remount("ro")  # what `mount -o remount,ro` of the database's folder does under a run
    snap = wait_for(lambda: (s := manager.snapshot(run_id)) and "NOT being saved" in s.store_warning and s)
    assert str(db) in snap.store_warning and "writable" in snap.store_warning
    small_disk.remount("rw")
    wait_for(lambda: manager.snapshot(run_id).store_warning == "")  # caught up at its next epoch

    small_disk.fill()  # rows fit, its 1.6 MB of weights do not
    snap = wait_for(lambda: (s := manager.snapshot(run_id)) and "weights are NOT saved" in s.store_warning and s)
    assert "database or disk is full" in snap.store_warning and "free disk space" in snap.store_warning
    small_disk.free()
    wait_for(lambda: manager.snapshot(run_id).store_warning == "", timeout=120)
    manager.stop(run_id)
    snap = wait_for(lambda: (s := manager.snapshot(run_id)) and not s.active and s)
    store = Store(db)
    assert snap.store_warning == "" and store.get_run(run_id)["status"] == "stopped"
    assert [e["epoch"] for e in store.epochs(run_id)] == [e.epoch for e in snap.epochs]


# -- the Train page ---------------------------------------------------------------------------------------------
@pytest.fixture
def page_on_small_disk(small_disk, tmp_path, monkeypatch):
    """The dashboard's manager (as conftest's app_manager) with RUNS_DB on the small disk; the page's helpers."""
    import streamlit as st

    import test_dashboard_app as page
    from dashboard import state

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("RUNS_DB", str(small_disk.path / "runs.db"))
    monkeypatch.delenv("TRAIN_THREADS", raising=False)
    state.get_manager().shutdown()
    st.cache_resource.clear()
    manager = state.get_manager()
    assert manager.data_dir == str(data_dir)
    yield SimpleNamespace(disk=small_disk, manager=manager, db=small_disk.path / "runs.db", page=page)
    manager.shutdown()
    st.cache_resource.clear()


def store_warnings(at) -> list[str]:
    from test_dashboard_app import shown

    return [shown(w.value) for w in at.warning if "saved" in w.value]


# ~0.1 s an epoch (50 epochs: time to act on the running run), weights of 0.5 MB (the small disk takes them)
TRAIN_SLOWLY = {"cfg_hidden": 128, "cfg_layers": 2, "cfg_batch": 16, "cfg_epochs": 50}


def test_the_train_page_reports_a_store_turned_read_only_mid_run_and_how_to_fix_it(page_on_small_disk):
    env, page = page_on_small_disk, page_on_small_disk.page
    at = page.new_app()
    rid = page.start(at, TRAIN_SLOWLY)
    at = page.poll(at, lambda a: len(page.epochs_shown(a)) >= 1, 90, "the first epoch")
    assert not store_warnings(at)

    env.disk.remount("ro")  # the database's folder made read-only under the run
    at = page.poll(at, lambda a: store_warnings(a), 60, "the store warning")
    (warning,) = store_warnings(at)
    assert "NOT being saved" in warning and f"make {env.disk.path} and the files in it writable" in warning, warning
    assert "RUNS_DB" in warning and "Training" in page.status_line(at)  # training goes on

    env.disk.remount("rw")  # fixed: the run catches up at its next epoch, and the page says so
    at = page.poll(at, lambda a: not store_warnings(a), 60, "the store warning cleared")
    env.manager.stop(rid)
    at = page.poll(at, page.settled, 60, "the run stopped")
    assert not store_warnings(at)
    assert [e["epoch"] for e in Store(env.db).epochs(rid)] == page.epochs_shown(at)


def test_the_train_page_reports_a_store_read_only_before_train_was_pressed(page_on_small_disk):
    env, page = page_on_small_disk, page_on_small_disk.page
    at = page.new_app()
    env.disk.remount("ro")
    page.start(at, TRAIN_SLOWLY | {"cfg_epochs": 2})
    at = page.poll(at, page.settled, 90, "the run to end")
    (warning,) = store_warnings(at)
    assert warning.startswith("This run is NOT saved") and str(env.db) in warning, warning
    assert f"To fix: make {env.disk.path} and the files in it writable" in warning and "RUNS_DB" in warning
    assert "Finished" in page.status_line(at)
