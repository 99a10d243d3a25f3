"""Sweeps: a search space, a sampler, a pruner and a trial budget, searched by Optuna; every trial an ordinary run.

A trial trains as a run in our store, tagged with its sweep id and trial number (core.runs.store), so History,
evaluation, export and Continue work on it; a pruned trial's run ends "pruned". The Optuna study (sampler state,
params, per-epoch reports) lives in its own SQLite file beside the run store (study_path), so a sweep survives
its process: `Sweeps.snapshot` reads an ended or killed sweep back, and `resume` runs the trials it has left
(trials that were stopped or cut off are tried again with the same params).

Trials run through a TrialExecutor (core.studies.sweep_executors): LocalExecutor trains them as RunManager runs in
its warm worker processes, one at a time on the CPU and up to `parallel` at once on a GPU; this module's lanes ask
the study and tell it. RayExecutor (core.studies.sweep_ray, `executor="ray"`) hands the loop to Ray Tune, which
asks the same study; it keeps each trial's record through a SweepDrive, the same calls the lanes use. The page polls
`Sweeps.snapshot(sweep_id)`, an immutable SweepSnapshot (core.studies.sweep_state).
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Callable

from ..config import ConfigError, RunStatus, StoreError
from ..engine.train import EpochResult, median_timed_epoch
from ..runs.live import Entry, LiveRegistry
from ..runs.store import current_owner, owner_alive
from .sweep_executors import LocalExecutor, TrialExecutor, TrialOutcome, TrialRequest  # noqa: F401 (re-exported)
from .sweep_space import DEFAULT_SPACE, SearchSpace, parse_space  # noqa: F401 (re-exported)
from .sweep_state import (EXECUTORS, OPTUNA_STATES, PRUNERS, RETRIED, SAMPLERS, SweepSnapshot,  # noqa: F401
                          SweepSpec, TrialSnapshot, check_runnable, default_spec, optuna_result, tell_study)

TPE_STARTUP_TRIALS = 5  # random trials before TPE models the results (Optuna's default, 10, is most of a small sweep)
# Finished trials before the median pruner prunes (Optuna's default 5): in a 16-trial sweep pruning starts with the
# trials TPE still draws at random. scripts/sweep_bench.py on full MNIST pruned 3-7 of 16 (3 or 4 here alike).
MEDIAN_STARTUP_TRIALS = 3


# -- the study file -----------------------------------------------------------------------------------------
def study_path(runs_db) -> Path:
    """The sweeps' Optuna file beside a run store: runs.db -> runs.sweeps.db."""
    path = Path(runs_db)
    return path.with_name(path.stem + ".sweeps.db")


def stored_spec(runs_db, sweep_id: str) -> SweepSpec:
    """A stored sweep's settings, read before anything starts (the CLI's --resume); KeyError if there is none."""
    path = study_path(runs_db)
    if not path.exists():
        raise KeyError(f"no sweep {sweep_id}: there is no study file {path}")
    storage = _optuna().storages.RDBStorage(f"sqlite:///{path.resolve()}")
    try:
        attrs = _optuna().load_study(study_name=sweep_id, storage=storage).user_attrs
    except KeyError:
        raise KeyError(f"no sweep {sweep_id} in {path}") from None
    if "spec" not in attrs:
        raise KeyError(f"{sweep_id} in {path} is not a sweep of this app")
    return SweepSpec.from_dict(attrs["spec"])


def _optuna():
    import optuna  # imported on first use: ~0.5 s, and only sweeps need it

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI and the page say what happened
    return optuna


def _sampler(spec: SweepSpec):
    samplers = _optuna().samplers
    if spec.sampler == "grid":
        return samplers.GridSampler(spec.space.grid(), seed=spec.seed)
    if spec.sampler == "random":
        return samplers.RandomSampler(seed=spec.seed)
    return samplers.TPESampler(seed=spec.seed, n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=spec.parallel > 1)


def _pruner(spec: SweepSpec):
    pruners = _optuna().pruners
    if spec.pruner == "median":
        return pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if spec.pruner == "halving":
        return pruners.SuccessiveHalvingPruner()
    return pruners.NopPruner()


# -- the registry ----------------------------------------------------------------------------------------------
class _Live(Entry):
    def __init__(self, registry: LiveRegistry, sweep_id: str, study):
        super().__init__(registry, sweep_id)
        self.study = study
        self.stop = threading.Event()
        self.lock = threading.Lock()  # Optuna's study and this sweep's trial list, shared by its lanes
        self.to_start = 0  # trials this drive may still ask for
        self.failure = ""  # why the sweep cannot go on (its executor failed), once it cannot

    def set_trial(self, number: int, **changes) -> None:
        with self.lock:
            trials = tuple(dataclasses.replace(t, **changes) if t.number == number else t
                           for t in self.snapshot.trials)
            self.update(trials=trials)


class Sweeps:
    """Sweeps for a long-lived process (the dashboard's server, or the CLI): start, stop, resume, snapshot."""

    def __init__(self, manager, executor: Callable[[SweepSpec], TrialExecutor] | None = None):
        self.manager = manager
        self.store = manager.store
        if self.store is None:
            raise StoreError(f"sweeps need the run database, which cannot be used: {manager.store_warning}")
        self.path = study_path(self.store.path)
        self._executor = executor or (lambda spec: executor_for(spec, manager))
        self._storage = None
        self._storage_lock = threading.Lock()
        self._live: LiveRegistry[SweepSnapshot, _Live] = LiveRegistry()

    def storage(self):
        with self._storage_lock:
            if self._storage is None:
                self._storage = _optuna().storages.RDBStorage(f"sqlite:///{self.path.resolve()}")
            return self._storage

    # -- commands ---------------------------------------------------------------------------------
    def start(self, spec: SweepSpec, owner: str = "") -> str:
        check_runnable(spec)
        sweep_id = "s" + os.urandom(5).hex()
        study = _optuna().create_study(study_name=sweep_id, storage=self.storage(), direction="maximize",
                                       sampler=_sampler(spec), pruner=_pruner(spec))
        created = time.time()
        study.set_user_attr("spec", spec.to_dict())
        study.set_user_attr("created_at", created)
        self._drive(sweep_id, study, spec, SweepSnapshot(sweep_id, spec, RunStatus.QUEUED, created_at=created,
                                                         owner=owner))
        return sweep_id

    def resume(self, sweep_id: str, owner: str = "") -> str:
        """Run the trials a stopped, failed or killed sweep has left; those stopped or cut off are tried again."""
        if self._live.is_active(sweep_id) or self._live.driving(sweep_id):
            raise ConfigError(f"sweep {sweep_id} is running")
        stored = self._stored(sweep_id)
        if stored is None:
            raise KeyError(f"no sweep {sweep_id} in {self.path}")
        if stored.status == RunStatus.RUNNING:
            raise ConfigError(f"sweep {sweep_id} is running in another process")
        spec = stored.spec
        check_runnable(spec)
        study = _optuna().load_study(study_name=sweep_id, storage=self.storage(), sampler=_sampler(spec),
                                     pruner=_pruner(spec))
        State = _optuna().trial.TrialState
        for trial in study.get_trials(deepcopy=False, states=(State.RUNNING, State.WAITING)):
            study.tell(trial.number, state=State.FAIL)  # its process ended; its run says how (interrupted)
        retried = set(study.user_attrs.get("retried", []))
        for trial in stored.trials:
            if not trial.counts and trial.number not in retried:
                study.enqueue_trial({k: v for k, v in trial.params.items() if not spec.space.dimension(k).fixed})
                retried.add(trial.number)
        study.set_user_attr("retried", sorted(retried))
        trials = tuple(dataclasses.replace(t, status=RunStatus.INTERRUPTED) if t.active else t for t in stored.trials)
        self._drive(sweep_id, study, spec,
                    dataclasses.replace(stored, status=RunStatus.QUEUED, trials=trials, message="", live=True,
                                        started_at=time.time(), ended_at=None, startup_s=0.0, owner=owner))
        return sweep_id

    def stop(self, sweep_id: str) -> None:
        """The running trials stop within a batch ("stopped"); no new trial starts."""
        live = self._live.entry(sweep_id)
        if live is not None:
            live.stop.set()
            for trial in live.snapshot.trials:
                if trial.active and trial.run_id:
                    self.manager.stop(trial.run_id)

    def snapshot(self, sweep_id: str) -> SweepSnapshot | None:
        snap = self._live.get(sweep_id)
        return snap if snap is not None else self._stored(sweep_id)

    def wait(self, sweep_id: str, timeout: float | None = None) -> SweepSnapshot | None:
        self._live.wait(sweep_id, timeout)
        return self.snapshot(sweep_id)

    def active(self) -> list[SweepSnapshot]:
        return self._live.active()

    def recent(self, limit: int = 20) -> list[dict]:
        """Newest first: [{sweep_id, created_at, status, trials, space}] of the sweeps in the study file (a live
        one's status from this process; one whose process is gone says "interrupted")."""
        if not self.path.exists():
            return []
        rows = []
        for study in _optuna().get_all_study_summaries(self.storage(), include_best_trial=False):
            attrs = study.user_attrs
            if "spec" not in attrs:
                continue
            live = self._live.get(study.study_name)
            status = live.status if live is not None else _stored_status(attrs)
            rows.append({"sweep_id": study.study_name, "created_at": attrs.get("created_at", 0.0), "status": status,
                         "trials": study.n_trials, "space": attrs["spec"]["space"]})
        return sorted(rows, key=lambda r: r["created_at"], reverse=True)[:limit]

    # -- driving ----------------------------------------------------------------------------------
    def _drive(self, sweep_id: str, study, spec: SweepSpec, first: SweepSnapshot) -> None:
        live = self._live.add(_Live(self._live, sweep_id, study), first)
        live.to_start = spec.budget - sum(t.counts for t in first.trials)
        study.set_user_attr("owner", current_owner())
        study.set_user_attr("status", RunStatus.RUNNING)
        self._live.drive(sweep_id, self._run, live, spec, name=f"sweep-{sweep_id}")

    def _run(self, live: _Live, spec: SweepSpec) -> None:
        status, message = RunStatus.FINISHED, ""
        try:
            executor = self._executor(spec)
            started = time.monotonic()
            executor.prepare(live.stop)
            live.update(status=RunStatus.RUNNING, startup_s=time.monotonic() - started)
            if hasattr(executor, "drive"):  # its engine asks the study and runs the trials (Ray Tune)
                executor.drive(SweepDrive(self, live, spec), live.stop)
            else:
                lanes = [threading.Thread(target=self._lane, args=(live, spec, executor), daemon=True,
                                          name=f"sweep-{live.key}-{i}") for i in range(max(1, executor.parallel))]
                for lane in lanes:
                    lane.start()
                for lane in lanes:
                    lane.join()
            if live.failure:
                status, message = RunStatus.FAILED, live.failure
            elif live.stop.is_set():
                status, message = RunStatus.STOPPED, "stopped: resume it to run the trials left"
            elif any(t.status == RunStatus.FAILED for t in live.snapshot.trials) and live.snapshot.best is None:
                status, message = RunStatus.FAILED, "every trial failed: " + live.snapshot.trials[-1].message
        except Exception as exc:  # the page and the CLI show why
            status, message = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
        try:  # stored before it is published as ended: whoever sees it ended can also read it back
            live.study.set_user_attr("status", status)
            live.study.set_user_attr("message", message)
        except Exception as exc:
            message = f"{message} (its end is not saved: {exc})".strip()
        live.update(status=status, message=message, ended_at=time.time())

    def _lane(self, live: _Live, spec: SweepSpec, executor: TrialExecutor) -> None:
        while not live.stop.is_set():
            with live.lock:
                if live.to_start <= 0:
                    return
                live.to_start -= 1
                trial = live.study.ask()
                params = spec.space.suggest(trial)
                _asked(live, spec, trial, params)
            asked = time.monotonic()
            try:
                outcome = self._train(live, spec, executor, trial, params)
            except Exception as exc:  # the executor broke (e.g. the manager shut down): no later trial would run
                live.failure = f"trial {trial.number}: {type(exc).__name__}: {exc}"
                live.stop.set()
                run_id = _trial(live.snapshot, trial.number).run_id
                outcome = TrialOutcome(run_id, RunStatus.FAILED, (), live.failure)
            _ended(live, trial, outcome, time.monotonic() - asked, tell=True)

    def _train(self, live: _Live, spec: SweepSpec, executor: TrialExecutor, trial, params: dict) -> TrialOutcome:
        def on_status(run_id: str, status: str) -> None:
            _status(live, trial, run_id, status)

        def on_epoch(epoch: EpochResult) -> str:
            with live.lock:
                trial.report(epoch.val_acc, epoch.epoch)
                prune = epoch.epoch < spec.epochs and trial.should_prune()
            _epoch(live, trial, epoch)
            if not prune:
                return ""
            return (f"pruned after epoch {epoch.epoch} of {spec.epochs} by the {spec.pruner} pruner: validation "
                    f"accuracy {epoch.val_acc:.2%} was behind the other trials' at that epoch")

        try:
            config = spec.trial_config(params)
        except ConfigError as exc:
            return TrialOutcome("", RunStatus.FAILED, (), str(exc))
        return executor.run_trial(TrialRequest(live.key, trial.number, config, live.snapshot.owner), on_status,
                                  on_epoch, live.stop)

    # -- reading back -----------------------------------------------------------------------------
    def _stored(self, sweep_id: str) -> SweepSnapshot | None:
        if not self.path.exists():
            return None
        optuna = _optuna()
        try:
            study = optuna.load_study(study_name=sweep_id, storage=self.storage())
        except KeyError:
            return None
        attrs = study.user_attrs
        if "spec" not in attrs:
            return None
        spec = SweepSpec.from_dict(attrs["spec"])
        fixed = {d.name: d.choices[0] for d in spec.space.dimensions if d.fixed}
        runs = {r["id"]: r for r in self.store.sweep_runs(sweep_id)}
        by_trial = {r["trial"]: r for r in runs.values()}
        trials = []
        for t in study.get_trials(deepcopy=False):
            run = runs.get(t.user_attrs.get("run_id", "")) or by_trial.get(t.number)
            epochs = tuple(EpochResult(**e, device=run["device"]) for e in self.store.epochs(run["id"])) if run else ()
            if run is not None:
                status = run["status"]
            else:
                status = RunStatus.INTERRUPTED if t.state.name in ("RUNNING", "WAITING") else RunStatus.FAILED
            if run is not None and status == RunStatus.RUNNING and not owner_alive(run.get("owner", "")):
                status = RunStatus.INTERRUPTED
            params = {d.name: {**fixed, **t.params}.get(d.name) for d in spec.space.dimensions}
            trials.append(TrialSnapshot(t.number, params, status, run["id"] if run else "", epochs, spec.epochs,
                                        run["message"] if run else "", t.datetime_start.timestamp()
                                        if t.datetime_start else 0.0, t.user_attrs.get("seconds"),
                                        t.user_attrs.get("overhead_s")))
        status = _stored_status(attrs)
        created = attrs.get("created_at", 0.0)
        ended = max((t.datetime_complete.timestamp() for t in study.get_trials(deepcopy=False)
                     if t.datetime_complete), default=None)
        return SweepSnapshot(sweep_id, spec, status, attrs.get("message", ""), tuple(trials), created, created, ended,
                             live=False)


# -- a trial's record, kept alike whoever runs it (the lanes here, or an executor's own loop) ---------------------
def _asked(live: _Live, spec: SweepSpec, trial, params: dict) -> None:
    """(live.lock held: asking and listing happen together, so the list keeps the study's order.)"""
    live.update(trials=live.snapshot.trials + (TrialSnapshot(
        trial.number, params, RunStatus.QUEUED, planned_epochs=spec.epochs, started_at=time.time()),))


def _status(live: _Live, trial, run_id: str, status: str) -> None:
    if _trial(live.snapshot, trial.number).run_id != run_id:
        with live.lock:
            trial.set_user_attr("run_id", run_id)  # a killed sweep's trial still leads to its run
    live.set_trial(trial.number, run_id=run_id, status=status)


def _epoch(live: _Live, trial, epoch: EpochResult) -> None:
    with live.lock:
        epochs = _trial(live.snapshot, trial.number).epochs + (epoch,)
    live.set_trial(trial.number, epochs=epochs)


def _ended(live: _Live, trial, outcome: TrialOutcome, seconds: float, tell: bool) -> None:
    """A trial has ended after `seconds` (wall, from asked to ended): its study record (and, with `tell`, its state
    and value) and its snapshot; one stopped or cut off is not counted, so a resume tries it again."""
    overhead = seconds - sum(e.seconds for e in outcome.epochs)
    with live.lock:
        for key, value in (("run_id", outcome.run_id), ("status", outcome.status), ("seconds", seconds),
                           ("overhead_s", overhead), ("epochs_run", len(outcome.epochs)),
                           ("seconds_per_epoch", median_timed_epoch(outcome.epochs))):
            trial.set_user_attr(key, value)
        if tell:
            tell_study(live.study, trial.number, outcome.status, outcome.epochs)
    live.set_trial(trial.number, status=outcome.status, epochs=outcome.epochs, message=outcome.message,
                   seconds=seconds, overhead_s=overhead, run_id=outcome.run_id)
    if outcome.status in RETRIED:
        with live.lock:
            live.to_start += 1


class SweepDrive:
    """One drive of a sweep for an executor whose engine runs its own loop (Ray Tune asks the study through its
    Optuna searcher and schedules the trials): the sweep's settings, study and sampler, and the calls that keep
    each trial's snapshot and study record as the lanes keep them. Its engine tells the study each trial's state
    (optuna_result) after `ended`."""

    def __init__(self, sweeps: "Sweeps", live: _Live, spec: SweepSpec):
        self._live, self.spec = live, spec
        self.sweep_id, self.owner = live.key, live.snapshot.owner
        self.storage, self.sampler = sweeps.storage(), _sampler(spec)
        self.trials_left = live.to_start

    def asked(self, trial, params: dict) -> None:
        with self._live.lock:
            self._live.to_start -= 1
            _asked(self._live, self.spec, trial, params)

    def status(self, trial, run_id: str, status: str) -> None:
        _status(self._live, trial, run_id, status)

    def epoch(self, trial, epoch: EpochResult) -> None:
        _epoch(self._live, trial, epoch)

    def ended(self, trial, outcome: TrialOutcome, seconds: float) -> None:
        _ended(self._live, trial, outcome, seconds, tell=False)


def executor_for(spec: SweepSpec, manager) -> TrialExecutor:
    """The executor a SweepSpec names: LocalExecutor (the manager's workers) or RayExecutor (Ray Tune)."""
    if spec.executor == "ray":
        from .sweep_ray import RayExecutor  # Ray is an optional install (requirements-cluster.txt)

        return RayExecutor(manager, spec.parallel)
    return LocalExecutor(manager, spec.parallel)


def _stored_status(attrs: dict) -> str:
    """A stored sweep's status; "running" only while the process driving it is alive."""
    status = attrs.get("status", RunStatus.FINISHED)
    if status == RunStatus.RUNNING and not owner_alive(attrs.get("owner", "")):
        return RunStatus.INTERRUPTED
    return status


def _trial(snap: SweepSnapshot, number: int) -> TrialSnapshot:
    return next(t for t in snap.trials if t.number == number)
