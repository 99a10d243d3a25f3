"""The run store under stress: two writer processes at once, a killed training process, and a database
that is corrupt or cannot be written (the app keeps training, with history off)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from history_helpers import (EMPTY_DATA_DIR, HISTORY_APP, REPO_ROOT, ManagerTracker, clear_streamlit_caches, poll)
from test_dashboard_app import shown
from core.runs.history import runs_table
from core.runs.store import Store, StoreError

TRAINER = """
import json, sys, threading
from core.config import RunConfig
from core.runs.training_run import TrainingRun
from core.runs.store import Store
store = Store(sys.argv[1])
config = RunConfig(hidden_sizes=(16,), batch_size=int(sys.argv[3]), device="cpu", threads=1, seed=int(sys.argv[4]))
run = TrainingRun(config, store=store, data_dir={data!r})
print(json.dumps({{"run_id": run.id}}), flush=True)
run.train_phase(int(sys.argv[2]), 0.5, on_epoch=lambda e: print(json.dumps(e.to_dict()), flush=True))
print(json.dumps({{"status": run.status, "store_warning": run.store_warning}}), flush=True)
"""

WRITER = """
import sys, time
from core.runs.store import Store

store = Store(sys.argv[1])
run_id = store.create_run({{"dataset": "mnist"}}, device="cpu", data_source="", torch_version="", parameters=0)
print(run_id, flush=True)
start = float(sys.argv[3])
while time.time() < start:  # both writers begin at the same moment
    time.sleep(0.001)
for epoch in range(1, int(sys.argv[2]) + 1):
    store.add_epoch(run_id, {{"epoch": epoch, "phase": 0, "lr": 0.5, "train_loss": 1.0 / epoch, "val_loss": 2.0 / epoch,
                             "val_acc": epoch / 1000, "seconds": 0.01, "samples_per_s": 1.0, "warmup": epoch == 1,
                             "elapsed": epoch * 0.01}})
store.finish_run(run_id, "finished")
"""

OPENER = """
import sys, time
from core.runs.store import Store, StoreError
start = float(sys.argv[2])
while time.time() < start:  # every opener begins at the same moment
    pass
try:
    Store(sys.argv[1])
    print("ok")
except StoreError as exc:
    print(exc)
"""

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow


def python(code: str, *args, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def trainer(db, epochs, batch=200, seed=42) -> subprocess.Popen:
    return python(TRAINER.format(data=str(EMPTY_DATA_DIR)), db, epochs, batch, seed)


def test_two_writer_processes_at_once_lose_no_epochs(tmp_path):
    db = tmp_path / "runs.db"
    Store(db)
    start = time.time() + 1.5  # after both interpreters are up
    writers = [python(WRITER.format(), db, 150, start) for _ in range(2)]
    outputs = [w.communicate(timeout=120) for w in writers]
    assert all(w.returncode == 0 for w in writers), [o[1] for o in outputs]
    store = Store(db)
    for out, _ in outputs:
        run_id = out.strip()
        epochs = store.epochs(run_id)
        assert [e["epoch"] for e in epochs] == list(range(1, 151))
        assert all(e["val_acc"] == e["epoch"] / 1000 for e in epochs)
        assert store.get_run(run_id)["status"] == "finished"


def test_processes_opening_a_new_database_at_once_all_get_it(tmp_path):
    # Switching a new file to WAL answered "database is locked" at once (no busy wait) in 1 of 5 of such races.
    for attempt in range(8):
        db = tmp_path / f"runs{attempt}.db"
        start = time.time() + 0.5
        openers = [python(OPENER, db, start) for _ in range(3)]
        outputs = [o.communicate(timeout=60)[0].strip() for o in openers]
        assert outputs == ["ok"] * 3, outputs


def test_two_training_runs_at_once_record_every_epoch(tmp_path):
    db = tmp_path / "runs.db"
    procs = [trainer(db, 3, seed=seed) for seed in (1, 2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    store = Store(db)
    for out, _ in outputs:
        lines = [json.loads(line) for line in out.splitlines()]
        run_id, printed, final = lines[0]["run_id"], lines[1:-1], lines[-1]
        assert final == {"status": "finished", "store_warning": ""}
        stored = store.epochs(run_id)
        assert len(stored) == len(printed) == 3
        for mine, theirs in zip(printed, stored):
            assert {k: mine[k] for k in theirs} == theirs  # every number as the trainer reported it
    rows = {r["run_id"]: r for r in runs_table(store)}
    assert len(rows) == 2 and all(r["epochs"] == 3 and r["status"] == "finished" for r in rows.values())


def test_killed_training_process_leaves_an_interrupted_run_with_its_epochs(tmp_path, monkeypatch):
    db = tmp_path / "runs.db"
    proc = trainer(db, 500, batch=500)
    run_id = json.loads(proc.stdout.readline())["run_id"]
    deadline = time.monotonic() + 120
    while len(Store(db).epochs(run_id)) < 2:  # each Store open also checks for orphans: the run must stay
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert Store(db).get_run(run_id)["status"] == "running"  # its process is alive
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    printed = [json.loads(line) for line in proc.stdout.read().splitlines()]
    proc.stdout.close()
    proc.stderr.close()

    store = Store(db)  # "after a restart": a new store finds the dead run
    run = store.get_run(run_id)
    assert run["status"] == "interrupted" and "ended before the run finished" in run["message"]
    epochs = store.epochs(run_id)
    assert len(epochs) >= 2 and len(epochs) >= len(printed)
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    row = runs_table(store)[0]
    # weights are saved as epochs end (not only when a phase ends), so a killed run can be continued
    assert row["status"] == "interrupted" and row["epochs"] == len(epochs) and row["weights_kept"] is True

    monkeypatch.setenv("RUNS_DB", str(db))
    monkeypatch.setenv("DATA_DIR", str(EMPTY_DATA_DIR))
    clear_streamlit_caches()
    at = AppTest.from_string(HISTORY_APP, default_timeout=60)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "interrupted" in table.loc[0, "status"] and table.loc[0, "epochs"] == len(epochs)
    assert at.dataframe[1].value["epoch"].tolist() == [e["epoch"] for e in epochs]
    clear_streamlit_caches()


@pytest.fixture
def app_env(monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(EMPTY_DATA_DIR))
    clear_streamlit_caches()
    managers = ManagerTracker(monkeypatch)
    yield monkeypatch
    managers.shutdown()
    clear_streamlit_caches()


def test_corrupt_database_gives_a_clear_message_and_the_app_still_trains(tmp_path, app_env):
    db = tmp_path / "runs.db"
    garbage = b"SQLite format 3\x00" + os.urandom(3000)  # a damaged header: not a database any more
    db.write_bytes(garbage)
    app_env.setenv("RUNS_DB", str(db))
    with pytest.raises(StoreError, match=f"cannot use the run database {db}"):
        Store(db)

    at = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not at.exception
    warnings = [shown(w.value) for w in at.warning]
    assert any(str(db) in w and "run history is off" in w for w in warnings), warnings
    at.slider(key="cfg_hidden").set_value(16)
    at.slider(key="cfg_batch").set_value(500)
    at.slider(key="cfg_epochs").set_value(1)
    at.button(key="train").click().run()
    assert not at.exception
    run_id = at.query_params["run"]
    poll(at, lambda a: any("Finished" in m.value and run_id in m.value for m in a.markdown))
    assert not at.exception and not at.error
    assert db.read_bytes() == garbage  # the user's file is never overwritten

    history = AppTest.from_string(HISTORY_APP, default_timeout=60).run()
    assert not history.exception
    assert any("Run history is off" in shown(e.value) and str(db) in shown(e.value) for e in history.error)


@pytest.mark.parametrize("where", ["proc", "file-as-folder"])
def test_unwritable_location_gives_a_clear_message(tmp_path, app_env, where):
    if where == "proc":
        db = "/proc/mlp-lab-no-such-folder/runs.db"  # not creatable, even for root
    else:
        (tmp_path / "plain-file").write_text("x")
        db = str(tmp_path / "plain-file" / "runs.db")
    app_env.setenv("RUNS_DB", db)
    with pytest.raises(StoreError) as info:
        Store(db)
    assert db in str(info.value) and "RUNS_DB" in str(info.value)
    history = AppTest.from_string(HISTORY_APP, default_timeout=60).run()
    assert not history.exception
    assert any("Run history is off" in e.value and "Training still works" in e.value for e in history.error)
