"""Sweeps (core.studies.sweep, sweep_space): the space's syntax and checks, and the Optuna driver with a fake executor
(real study files and a real store, no worker processes)."""
from __future__ import annotations

import dataclasses
import json
import socket

import optuna
import pytest

from core import cli
from core.config import ConfigError, RunConfig, RunStatus
from core.runs.history import runs_table
from core.studies.sweep import Sweeps, SweepSnapshot, SweepSpec, TrialSnapshot, default_spec, study_path
from core.studies.sweep_space import DEFAULT_SPACE, Dimension, parse_space
from sweep_helpers import FakeExecutor, StoreOnlyManager


# -- the space ----------------------------------------------------------------------------------------------
def test_the_issues_space_parses_and_prints_back():
    space = parse_space(DEFAULT_SPACE)
    assert [d.name for d in space.dimensions] == ["hidden", "layers", "lr", "batch_size", "optimizer"]
    assert space.dimension("hidden") == Dimension("hidden", 16, 1024, log=True)
    assert space.dimension("layers") == Dimension("layers", 1, 3)
    assert space.dimension("lr") == Dimension("lr", 0.001, 1.0, log=True)
    assert space.dimension("optimizer").choices == ("sgd", "adam")
    assert parse_space(space.text()) == space


def test_fixed_values_and_choices_of_numbers():
    space = parse_space("hidden=64|128, lr=0.1, activation=tanh|relu, weight_decay=0.0001..0.01:log")
    assert space.dimension("lr").fixed and not space.dimension("hidden").fixed
    assert [d.name for d in space.searched] == ["hidden", "activation", "weight_decay"]
    config = space.config(RunConfig(), {"hidden": 128, "lr": 0.1, "activation": "tanh", "weight_decay": 0.001})
    assert (config.hidden_sizes, config.lr, config.activation, config.weight_decay) == ((128,), 0.1, "tanh", 0.001)


def test_hidden_and_layers_make_equal_layers():
    space = parse_space(DEFAULT_SPACE)
    config = space.config(RunConfig(), {"hidden": 256, "layers": 3, "lr": 0.01, "batch_size": 64, "optimizer": "adam"})
    assert config.hidden_sizes == (256, 256, 256) and config.batch_size == 64 and config.optimizer == "adam"
    assert parse_space("layers=1..3").config(RunConfig(hidden_sizes=(50,)), {"layers": 2}).hidden_sizes == (50, 50)


@pytest.mark.parametrize("text, reason", [
    ("hidden=0..5", "hidden_sizes: must be from 1 to"),  # RunConfig's own limit, not a copy of it
    ("hidden=16..99999", "hidden_sizes: must be from 1 to"),
    ("lr=1..0.1", "must go up"),
    ("lr=0..1:log", "lr: must be in (0, 10]"),
    ("weight_decay=0..0.1:log", "log range needs LOW > 0"),
    ("layers=0..3", "hidden layers"),
    ("batch_size=32..100000:log", "batch_size: must be from 1 to"),
    ("depth=1..3", "unknown hyperparameter 'depth'"),
    ("hidden=16..", "should look like hidden=LOW..HIGH"),
    ("hidden=..16", "should look like hidden=LOW..HIGH"),
    ("hidden=16..32..64", "should look like hidden=LOW..HIGH"),
    ("hidden", "should look like NAME=LOW..HIGH"),
    ("hidden=16.5..64", "not a whole number"),
    ("lr=a..b", "not a number"),
    ("optimizer=sgd|rmsprop", "optimizer: must be one of"),
    ("optimizer=sgd..adam", "give choices"),
    ("optimizer=sgd|adam:log", "':log' goes with a range"),
    ("hidden=16..64,hidden=8", "hidden given twice"),
    ("hidden=16..64,,lr=0.1", "empty entry"),
    ("", "empty entry"),
    ("lr=0.1", "nothing to search"),
])
def test_bad_spaces_say_why_in_one_line(text, reason):
    with pytest.raises(ConfigError) as info:
        parse_space(text)
    message = str(info.value)
    assert reason in message and "\n" not in message and message.startswith("space: ")


def test_grid_values_span_each_range():
    space = parse_space(DEFAULT_SPACE)
    grid = space.grid()
    assert grid["hidden"] == [16, 128, 1024] and grid["layers"] == [1, 2, 3]
    assert grid["lr"][0] == 0.001 and grid["lr"][-1] == 1.0 and grid["optimizer"] == ["sgd", "adam"]
    assert space.grid_size() == 3 * 3 * 3 * 3 * 2


def test_a_spec_checks_its_settings_and_round_trips():
    spec = default_spec(trials=5, seed=7, sampler="random", pruner="halving")
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    for bad in ({"sampler": "bayes"}, {"pruner": "hyperband"}, {"trials": 0}, {"epochs": 0}, {"parallel": 0},
                {"executor": "dask"}):
        with pytest.raises(ConfigError):
            default_spec(**bad)
    assert default_spec(sampler="grid", trials=1000).budget == 162


# -- the driver, with made-up trials ------------------------------------------------------------------------
@pytest.fixture
def sweeps(tmp_path):
    manager = StoreOnlyManager(tmp_path / "runs.db")
    executors = []

    def make(spec):
        executors.append(FakeExecutor(manager.store, hold=getattr(make, "hold", None)))
        return executors[-1]

    registry = Sweeps(manager, executor=make)
    registry.executors = executors
    registry.make = make
    return registry


def run(sweeps, spec):
    snap = sweeps.wait(sweeps.start(spec), timeout=60)
    assert snap.status == RunStatus.FINISHED, snap.message
    return snap


def test_the_study_lives_beside_the_run_store(sweeps, tmp_path):
    assert study_path(tmp_path / "runs.db") == tmp_path / "runs.sweeps.db"
    run(sweeps, default_spec(trials=2, epochs=2, sampler="random", seed=1))
    assert (tmp_path / "runs.sweeps.db").exists()


@pytest.mark.parametrize("sampler", ["random", "grid", "tpe"])
def test_a_seeded_sweep_tries_the_same_params_in_the_same_order(sweeps, sampler):
    spec = default_spec(trials=8, epochs=2, sampler=sampler, pruner="none", seed=11)
    first, second = run(sweeps, spec), run(sweeps, spec)
    assert first.sweep_id != second.sweep_id
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert len({json.dumps(t.params, sort_keys=True) for t in first.trials}) == 8
    other = run(sweeps, default_spec(trials=8, epochs=2, sampler=sampler, pruner="none", seed=12))
    assert [t.params for t in other.trials] != [t.params for t in first.trials]


def test_a_grid_sweep_runs_its_whole_grid(sweeps):
    # Optuna's grid sampler stops the study when its last point is told, which raises outside study.optimize: the
    # last trial was left "running" in a sweep reported finished
    snap = run(sweeps, SweepSpec(parse_space("hidden=16|32"), trials=5, epochs=2, sampler="grid", pruner="none"))
    assert [t.status for t in snap.trials] == ["finished", "finished"]
    assert sorted(t.params["hidden"] for t in snap.trials) == [16, 32]
    assert all(t.seconds is not None for t in snap.trials)


def test_every_trial_is_a_run_tagged_with_the_sweep(sweeps):
    snap = run(sweeps, default_spec(trials=6, epochs=3, sampler="random", seed=3))
    runs = sweeps.store.sweep_runs(snap.sweep_id)
    assert [(r["trial"], r["id"]) for r in runs] == [(t.number, t.run_id) for t in snap.trials]
    for trial, stored in zip(snap.trials, runs):
        assert stored["status"] == trial.status and stored["sweep_id"] == snap.sweep_id
        assert [e["val_acc"] for e in sweeps.store.epochs(stored["id"])] == [e.val_acc for e in trial.epochs]
        assert RunConfig.from_dict(stored["config"]) == snap.spec.trial_config(trial.params)


def test_history_rows_name_the_sweep_and_trial(sweeps):
    snap = run(sweeps, default_spec(trials=2, epochs=2, sampler="random", seed=3))
    own = sweeps.store.create_run(RunConfig().to_dict(), device="cpu", data_source="", torch_version="", parameters=0)
    rows = {r["run_id"]: r for r in runs_table(sweeps.store)}
    assert [(rows[t.run_id]["sweep_id"], rows[t.run_id]["trial"]) for t in snap.trials] == \
        [(snap.sweep_id, 0), (snap.sweep_id, 1)]
    assert (rows[own]["sweep_id"], rows[own]["trial"]) == ("", None)


def test_the_median_pruner_stops_trials_early(sweeps):
    snap = run(sweeps, default_spec(trials=16, epochs=4, sampler="random", pruner="median", seed=5))
    pruned = [t for t in snap.trials if t.status == RunStatus.PRUNED]
    assert pruned and all(len(t.epochs) < 4 for t in pruned)
    assert all(len(t.epochs) == 4 for t in snap.trials if t.status == RunStatus.FINISHED)
    assert all(sweeps.store.get_run(t.run_id)["status"] == "pruned" for t in pruned)
    assert "pruned after epoch" in pruned[0].message
    assert snap.counts() == {"finished": 16 - len(pruned), "pruned": len(pruned)}
    assert snap.best.status == RunStatus.FINISHED
    assert snap.best.value == max(t.value for t in snap.trials if t.status == RunStatus.FINISHED)


def test_no_pruner_runs_every_epoch(sweeps):
    snap = run(sweeps, default_spec(trials=8, epochs=3, sampler="random", pruner="none", seed=5))
    assert all(t.status == RunStatus.FINISHED and len(t.epochs) == 3 for t in snap.trials)


def test_the_summary_and_trial_lines(sweeps):
    snap = run(sweeps, default_spec(trials=4, epochs=2, sampler="random", seed=2))
    line = snap.trials[0].result()
    assert set(line) >= {"trial", "params", "value", "best_epoch", "epochs_run", "status", "seconds", "run_id"}
    summary = snap.summary()
    assert summary["best_value"] == snap.best.value and summary["counts"] == {"finished": 4}
    assert summary["total_seconds"] > 0 and summary["overhead_s"] is not None
    json.dumps(summary)
    assert snap.eta_s() == 0.0


def test_eta_counts_the_trials_left_at_the_mean_length_of_those_ended():
    spec = default_spec(trials=4, epochs=2)
    ended = TrialSnapshot(0, {}, RunStatus.FINISHED, seconds=10.0)
    running = TrialSnapshot(1, {}, RunStatus.RUNNING, started_at=1000.0)
    snap = SweepSnapshot("s", spec, RunStatus.RUNNING, trials=(ended, running))
    assert snap.eta_s(now=1004.0) == pytest.approx(6.0 + 2 * 10.0)  # the running one's rest, then two more
    assert SweepSnapshot("s", spec, RunStatus.RUNNING, trials=(running,)).eta_s() is None  # nothing to go by
    stopped = TrialSnapshot(2, {}, RunStatus.STOPPED, seconds=2.0)
    assert dataclasses.replace(snap, trials=(ended, stopped)).planned == 5  # tried again, so one more


def test_stop_then_resume_runs_the_trials_left(sweeps):
    sweeps.make.hold = 2
    spec = default_spec(trials=5, epochs=3, sampler="random", pruner="none", seed=4)
    sweep_id = sweeps.start(spec)
    assert sweeps.executors and sweeps.executors[0].holding.wait(30)
    sweeps.stop(sweep_id)
    snap = sweeps.wait(sweep_id, timeout=30)
    assert snap.status == RunStatus.STOPPED
    assert [t.status for t in snap.trials] == ["finished", "finished", "stopped"]
    stopped = snap.trials[2]
    assert sweeps.store.get_run(stopped.run_id)["status"] == "stopped"

    sweeps.make.hold = None
    sweeps.resume(sweep_id)
    snap = sweeps.wait(sweep_id, timeout=60)
    assert snap.status == RunStatus.FINISHED
    assert [t.status for t in snap.trials] == ["finished"] * 2 + ["stopped"] + ["finished"] * 3
    assert snap.trials[3].params == stopped.params  # the stopped trial is tried again first
    assert sum(t.counts for t in snap.trials) == 5 == snap.planned - 1
    assert len(sweeps.store.sweep_runs(sweep_id)) == 6


def test_a_sweep_is_read_back_by_another_process(sweeps, tmp_path):
    snap = run(sweeps, default_spec(trials=4, epochs=2, sampler="random", seed=8))
    later = Sweeps(StoreOnlyManager(tmp_path / "runs.db"))  # as a restarted server: nothing live
    stored = later.snapshot(snap.sweep_id)
    assert not stored.live and stored.status == RunStatus.FINISHED and stored.spec == snap.spec
    assert [(t.number, t.params, t.status, t.run_id, t.value) for t in stored.trials] == \
        [(t.number, t.params, t.status, t.run_id, t.value) for t in snap.trials]
    assert stored.best.number == snap.best.number
    assert [(r["sweep_id"], r["status"], r["trials"]) for r in later.recent()] == [(snap.sweep_id, "finished", 4)]
    assert later.snapshot("nope") is None


def test_a_killed_sweep_is_found_interrupted_and_resumed(sweeps, tmp_path):
    snap = run(sweeps, default_spec(trials=3, epochs=2, sampler="random", pruner="none", seed=9))
    # What a kill in trial 3 of 4 leaves: the study says running, owned by a process that is gone, with that trial
    # left running in Optuna and its run interrupted in the store.
    loaded = optuna.load_study(study_name=snap.sweep_id, storage=sweeps.storage())
    spec = dataclasses.replace(snap.spec, trials=4)
    loaded.set_user_attr("spec", spec.to_dict())
    loaded.set_user_attr("owner", f"{socket.gethostname()}|999999|1")
    loaded.set_user_attr("status", "running")
    trial = loaded.ask()
    params = spec.space.suggest(trial)
    run_id = sweeps.store.create_run(spec.trial_config(params).to_dict(), device="cpu", data_source="",
                                     torch_version="", parameters=0, tags={"sweep_id": snap.sweep_id, "trial": 3})
    sweeps.store.finish_run(run_id, RunStatus.INTERRUPTED, "the process running it ended before the run finished")
    trial.set_user_attr("run_id", run_id)

    later = Sweeps(StoreOnlyManager(tmp_path / "runs.db"), executor=lambda s: FakeExecutor(sweeps.store))
    found = later.snapshot(snap.sweep_id)
    assert found.status == RunStatus.INTERRUPTED and later.recent()[0]["status"] == RunStatus.INTERRUPTED
    assert [t.status for t in found.trials] == ["finished"] * 3 + ["interrupted"]
    later.resume(snap.sweep_id)
    done = later.wait(snap.sweep_id, timeout=60)
    assert done.status == RunStatus.FINISHED
    assert [t.status for t in done.trials] == ["finished"] * 3 + ["interrupted", "finished"]
    assert done.trials[4].params == params


def test_parallel_lanes_share_one_study_and_keep_the_budget(tmp_path):
    manager = StoreOnlyManager(tmp_path / "runs.db")
    executor = FakeExecutor(manager.store)
    executor.parallel = 3  # as a GPU's LocalExecutor with parallel=3
    sweeps = Sweeps(manager, executor=lambda spec: executor)
    snap = run(sweeps, default_spec(trials=9, epochs=2, sampler="tpe", pruner="median", seed=1))
    assert sorted(t.number for t in snap.trials) == list(range(9))
    assert sorted(r.number for r in executor.requests) == list(range(9))
    assert len(sweeps.store.sweep_runs(snap.sweep_id)) == 9


def test_an_executor_that_breaks_fails_the_sweep_and_says_why(tmp_path):
    class Broken(FakeExecutor):
        def run_trial(self, request, on_status, on_epoch, stop):
            raise RuntimeError("the run manager is shut down")

    manager = StoreOnlyManager(tmp_path / "runs.db")
    sweeps = Sweeps(manager, executor=lambda spec: Broken(manager.store))
    snap = sweeps.wait(sweeps.start(default_spec(trials=3, epochs=2, sampler="random", seed=1)), timeout=30)
    assert snap.status == RunStatus.FAILED and "the run manager is shut down" in snap.message
    assert [t.status for t in snap.trials] == ["failed"]  # no later trial was started
    assert sweeps.snapshot(snap.sweep_id).status == RunStatus.FAILED


def test_parallel_trials_need_a_gpu(sweeps):
    with pytest.raises(ConfigError, match="parallel"):
        sweeps.start(default_spec(parallel=2, base=RunConfig(device="cpu")))


# -- the CLI's bad options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["hidden=0..5", "lr=1..0.1", "depth=1..3", "hidden=16.."])
def test_cli_refuses_a_bad_space_with_exit_2(space, capsys, tmp_path):
    assert cli.main(["sweep", "--space", space, "--db", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: space: ")
    assert not (tmp_path / "runs.db").exists()


def test_cli_refuses_to_resume_an_unknown_sweep_with_exit_2(capsys, tmp_path):
    assert cli.main(["sweep", "--resume", "s0000", "--db", str(tmp_path / "runs.db")]) == 2
    assert "--resume: no sweep s0000" in capsys.readouterr().err


def test_cli_refuses_bad_sweep_settings_with_exit_2(capsys, tmp_path):
    assert cli.main(["sweep", "--trials", "0", "--db", str(tmp_path / "runs.db")]) == 2
    assert "trials" in capsys.readouterr().err
    assert cli.main(["sweep", "--parallel", "2", "--device", "cpu", "--db", str(tmp_path / "runs.db")]) == 2
    assert "parallel" in capsys.readouterr().err
