"""Sweeps: a search space, a sampler, a pruner and a trial budget, searched by Optuna; every trial an ordinary run.

A trial trains as a run in our store, tagged with its sweep id and trial number (core.runs.store), so History,
evaluation, export and Continue work on it; a pruned trial's run ends "pruned". The Optuna study (sampler state,
params, per-epoch reports) lives in its own SQLite file beside the run store (study_path), so a sweep survives
its process: `Sweeps.snapshot` reads an ended or killed sweep back, and `resume` runs the trials it has left
(trials that were stopped or cut off are tried again with the same params).

Trials run through a TrialExecutor: LocalExecutor trains them as RunManager runs in its warm worker processes
(core.runs.manager), one at a time on the CPU and up to `parallel` at once on a GPU. Another executor (Ray Tune)
needs only run_trial. The page polls `Sweeps.snapshot(sweep_id)`, an immutable SweepSnapshot.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ..config import ConfigError, RunConfig, RunStatus, StoreError
from ..engine.devices import resolve_device
from ..engine.train import EpochResult, median_timed_epoch
from ..runs.live import Entry, LiveRegistry
from ..runs.store import current_owner, owner_alive
from .sweep_space import DEFAULT_SPACE, SearchSpace, parse_space

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
EXECUTORS = ("local",)
MAX_TRIALS = 10_000
TPE_STARTUP_TRIALS = 5  # random trials before TPE models the results (Optuna's default, 10, is most of a small sweep)
MEDIAN_STARTUP_TRIALS = 4  # finished trials before the median pruner prunes (Optuna's default 5)
RETRIED = (RunStatus.STOPPED, RunStatus.INTERRUPTED)  # trials cut short from outside: tried again on resume
OPTUNA_STATES = {RunStatus.FINISHED: "COMPLETE", RunStatus.DIVERGED: "COMPLETE", RunStatus.PRUNED: "PRUNED"}


@dataclass(frozen=True)
class SweepSpec:
    space: SearchSpace
    trials: int = 16  # trials that count (a trial stopped or cut off is tried again and counts once)
    epochs: int = 4  # per trial
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None  # the sampler's: the same seeded random or grid sweep tries the same params in order
    base: RunConfig = RunConfig()  # every setting the space leaves out (dataset, device, the runs' own seed...)
    parallel: int = 1  # trials at once (a GPU only: CPU trials share the cores)
    executor: str = "local"

    def __post_init__(self) -> None:
        if isinstance(self.space, str):
            object.__setattr__(self, "space", parse_space(self.space))
        for name, value, allowed in (("sampler", self.sampler, SAMPLERS), ("pruner", self.pruner, PRUNERS),
                                     ("executor", self.executor, EXECUTORS)):
            if value not in allowed:
                raise ConfigError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")
        for name, value, high in (("trials", self.trials, MAX_TRIALS), ("parallel", self.parallel, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
                raise ConfigError(f"{name}: must be a whole number from 1 to {high}; got {value!r}")
        RunConfig(epochs=self.epochs)
        if self.seed is not None:
            RunConfig(seed=self.seed)

    @property
    def budget(self) -> int:
        """Trials that count: the grid sampler stops once every grid point is tried."""
        return min(self.trials, self.space.grid_size()) if self.sampler == "grid" else self.trials

    def trial_config(self, params: dict) -> RunConfig:
        return self.space.config(self.base, params).replace(epochs=self.epochs)

    def to_dict(self) -> dict:
        return {"space": self.space.text(), "trials": self.trials, "epochs": self.epochs, "sampler": self.sampler,
                "pruner": self.pruner, "seed": self.seed, "base": self.base.to_dict(), "parallel": self.parallel,
                "executor": self.executor}

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        return cls(**{**data, "space": parse_space(data["space"]), "base": RunConfig.from_dict(data["base"])})


def default_spec(**changes) -> SweepSpec:
    return SweepSpec(parse_space(DEFAULT_SPACE), **changes)


def check_runnable(spec: SweepSpec) -> None:
    """What only this machine can tell: its device, and parallel trials only on a GPU (DeviceError, ConfigError)."""
    if spec.parallel > 1 and resolve_device(spec.base.device).type == "cpu":
        raise ConfigError("parallel: CPU trials run one at a time (they share the cores); parallel trials need "
                          "a GPU (device cuda)")


@dataclass(frozen=True)
class TrialSnapshot:
    number: int  # Optuna's trial number, from 0
    params: dict  # the trial's settings, fixed ones included (read only)
    status: str  # queued, running, then the run's: finished, pruned, stopped, diverged, failed, interrupted
    run_id: str = ""
    epochs: tuple[EpochResult, ...] = ()
    planned_epochs: int = 0
    message: str = ""
    started_at: float = 0.0  # time.time() when it was asked for
    seconds: float | None = None  # wall seconds from asked to told, once it has ended
    overhead_s: float | None = None  # those seconds less its epochs': dispatch, setup, test, saving weights

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.QUEUED, RunStatus.LOADING, RunStatus.RUNNING)

    @property
    def value(self) -> float | None:
        """The objective: the best validation accuracy of its epochs (0-1)."""
        return max((e.val_acc for e in self.epochs), default=None)

    @property
    def best_epoch(self) -> int | None:
        return max(self.epochs, key=lambda e: e.val_acc).epoch if self.epochs else None

    @property
    def seconds_per_epoch(self) -> float | None:
        return median_timed_epoch(self.epochs)

    @property
    def counts(self) -> bool:
        """Whether it uses up one of the sweep's trials (one stopped or cut off is tried again)."""
        return self.status not in RETRIED

    def result(self) -> dict:
        """The CLI's line for this trial."""
        return {"type": "trial", "trial": self.number, "params": self.params, "value": self.value,
                "best_epoch": self.best_epoch, "epochs_run": len(self.epochs), "status": self.status,
                "seconds": self.seconds, "seconds_per_epoch": self.seconds_per_epoch, "overhead_s": self.overhead_s,
                "run_id": self.run_id, "message": self.message}


@dataclass(frozen=True)
class SweepSnapshot:
    sweep_id: str
    spec: SweepSpec
    status: str  # queued, running, finished, stopped, failed, interrupted (its process ended first)
    message: str = ""
    trials: tuple[TrialSnapshot, ...] = ()
    created_at: float = field(default_factory=time.time)
    started_at: float = field(default_factory=time.time)  # this drive's start (a resumed sweep: the resume)
    ended_at: float | None = None
    startup_s: float = 0.0  # waiting for a warm worker before the first trial (not in any trial's overhead)
    live: bool = True  # False when read back from the study file and the store

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.QUEUED, RunStatus.RUNNING)

    @property
    def planned(self) -> int:
        """Trials it will have run when done: its budget, plus those tried again."""
        return self.spec.budget + sum(not t.counts for t in self.trials)

    def counts(self) -> dict[str, int]:
        """Trials by status, e.g. {'finished': 9, 'pruned': 6, 'running': 1}."""
        out: dict[str, int] = {}
        for trial in self.trials:
            out[str(trial.status)] = out.get(str(trial.status), 0) + 1
        return out

    @property
    def best(self) -> TrialSnapshot | None:
        """The trial with the best objective among those that ran to their end (Optuna's COMPLETE)."""
        done = [t for t in self.trials if t.status in OPTUNA_STATES and OPTUNA_STATES[t.status] == "COMPLETE"
                and t.value is not None]
        return max(done, key=lambda t: (t.value, -t.number), default=None)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds until the last trial ends, from the mean length of the trials that ended; None before one has."""
        if not self.active:
            return 0.0
        ended = [t.seconds for t in self.trials if not t.active and t.seconds is not None]
        if not ended:
            return None
        mean, now = statistics.fmean(ended), now or time.time()
        running = [t for t in self.trials if t.active]
        left = sum(max(0.0, mean - (now - t.started_at)) for t in running)
        unstarted = max(0, self.planned - len(self.trials))
        return (left + unstarted * mean) / max(1, min(self.spec.parallel, unstarted + len(running)))

    def overheads(self) -> list[float]:
        return [t.overhead_s for t in self.trials if t.overhead_s is not None]

    def summary(self) -> dict:
        """The CLI's last line: the best trial, counts by status, seconds, per-trial overhead."""
        best, overheads = self.best, self.overheads()
        end = self.ended_at or time.time()
        return {"type": "summary", "sweep_id": self.sweep_id, "status": self.status, "message": self.message,
                "best_trial": best.number if best else None, "best_params": best.params if best else None,
                "best_value": best.value if best else None, "best_run_id": best.run_id if best else None,
                "counts": self.counts(), "trials": len(self.trials), "total_seconds": end - self.started_at,
                "startup_s": self.startup_s,
                "overhead_s": statistics.median(overheads) if overheads else None,
                "overhead_max_s": max(overheads, default=None)}


# -- executors ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialRequest:
    sweep_id: str
    number: int
    config: RunConfig  # its epochs are the trial's

    @property
    def tags(self) -> dict:
        return {"sweep_id": self.sweep_id, "trial": self.number}


@dataclass(frozen=True)
class TrialOutcome:
    run_id: str
    status: str  # the run's, as the store has it
    epochs: tuple[EpochResult, ...]
    message: str = ""


class TrialExecutor(Protocol):
    """Trains trials as runs in the store (tagged with TrialRequest.tags)."""

    parallel: int  # trials it may train at once

    def prepare(self, stop: threading.Event) -> None:
        """Before the first trial: have a worker ready (its start is not a trial's overhead)."""

    def run_trial(self, request: TrialRequest, on_start: Callable[[str], None],
                  on_epoch: Callable[[EpochResult], str], stop: threading.Event) -> TrialOutcome:
        """Train one trial: on_start(run_id) once its run exists, on_epoch(result) after every epoch as it arrives,
        which returns '' to go on or a reason to prune (the run then ends "pruned" within a batch). Once `stop` is
        set the run stops within a batch ("stopped"). Returns when the run has ended."""


class LocalExecutor:
    """Trials as RunManager runs: the manager's device queue runs them one at a time on the CPU (and up to its
    max_gpu_runs on a GPU); each takes the warm worker of the run before it, so data is read once per worker."""

    POLL_S = 0.05  # how often a trial's snapshot is read for new epochs and Stop

    def __init__(self, manager, parallel: int = 1):
        self.manager = manager
        self.parallel = parallel

    def prepare(self, stop: threading.Event, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        self.manager.warm_up()
        while self.manager.worker_starting() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(self.POLL_S)

    def run_trial(self, request: TrialRequest, on_start, on_epoch, stop: threading.Event) -> TrialOutcome:
        run_id = self.manager.start(request.config, owner=request.sweep_id, tags=request.tags)
        on_start(run_id)
        seen, asked_to_end = 0, False
        while True:
            snap = self.manager.wait(run_id, self.POLL_S)
            for epoch in snap.epochs[seen:]:
                reason = "" if asked_to_end else on_epoch(epoch)
                if reason:
                    self.manager.stop(run_id, RunStatus.PRUNED, reason)
                    asked_to_end = True
            seen = len(snap.epochs)
            if stop.is_set() and not asked_to_end:
                self.manager.stop(run_id)
                asked_to_end = True
            if not snap.active:
                break
        snap = self.manager.wait(run_id)  # its thread has let go of the worker, so the next trial gets it warm
        return TrialOutcome(run_id, snap.status, tuple(snap.epochs), snap.message)


# -- the study file -----------------------------------------------------------------------------------------
def study_path(runs_db) -> Path:
    """The sweeps' Optuna file beside a run store: runs.db -> runs.sweeps.db."""
    path = Path(runs_db)
    return path.with_name(path.stem + ".sweeps.db")


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
    def __init__(self, registry: LiveRegistry, sweep_id: str, study, owner: str):
        super().__init__(registry, sweep_id)
        self.study = study
        self.owner = owner
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
        self._executor = executor or (lambda spec: LocalExecutor(manager, spec.parallel))
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
        self._drive(sweep_id, study, spec, owner, SweepSnapshot(sweep_id, spec, RunStatus.QUEUED, created_at=created))
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
        self._drive(sweep_id, study, spec, owner,
                    dataclasses.replace(stored, status=RunStatus.QUEUED, trials=trials, message="", live=True,
                                        started_at=time.time(), ended_at=None, startup_s=0.0))
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
        """Newest first: [{sweep_id, created_at, trials}] of the sweeps in the study file."""
        if not self.path.exists():
            return []
        summaries = _optuna().get_all_study_summaries(self.storage(), include_best_trial=False)
        rows = [{"sweep_id": s.study_name, "created_at": s.user_attrs.get("created_at", 0.0), "trials": s.n_trials}
                for s in summaries if "spec" in s.user_attrs]
        return sorted(rows, key=lambda r: r["created_at"], reverse=True)[:limit]

    # -- driving ----------------------------------------------------------------------------------
    def _drive(self, sweep_id: str, study, spec: SweepSpec, owner: str, first: SweepSnapshot) -> None:
        live = self._live.add(_Live(self._live, sweep_id, study, owner), first)
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
        optuna = _optuna()
        while not live.stop.is_set():
            with live.lock:
                if live.to_start <= 0:
                    return
                live.to_start -= 1
                trial = live.study.ask()
                params = spec.space.suggest(trial)
                live.update(trials=live.snapshot.trials + (TrialSnapshot(
                    trial.number, params, RunStatus.QUEUED, planned_epochs=spec.epochs, started_at=time.time()),))
            asked = time.monotonic()
            try:
                outcome = self._train(live, spec, executor, trial, params)
            except Exception as exc:  # the executor broke (e.g. the manager shut down): no later trial would run
                live.failure = f"trial {trial.number}: {type(exc).__name__}: {exc}"
                live.stop.set()
                run_id = next(t.run_id for t in live.snapshot.trials if t.number == trial.number)
                outcome = TrialOutcome(run_id, RunStatus.FAILED, (), live.failure)
            seconds = time.monotonic() - asked
            overhead = seconds - sum(e.seconds for e in outcome.epochs)
            with live.lock:
                for key, value in (("run_id", outcome.run_id), ("status", outcome.status), ("seconds", seconds),
                                   ("overhead_s", overhead), ("epochs_run", len(outcome.epochs)),
                                   ("seconds_per_epoch", median_timed_epoch(outcome.epochs))):
                    trial.set_user_attr(key, value)
                state = optuna.trial.TrialState[OPTUNA_STATES.get(outcome.status, "FAIL")]
                value = max((e.val_acc for e in outcome.epochs), default=None)
                if state == optuna.trial.TrialState.COMPLETE and value is None:
                    state = optuna.trial.TrialState.FAIL
                live.study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
            live.set_trial(trial.number, status=outcome.status, epochs=outcome.epochs, message=outcome.message,
                           seconds=seconds, overhead_s=overhead, run_id=outcome.run_id)
            if outcome.status in RETRIED:
                with live.lock:
                    live.to_start += 1  # not counted: a resume tries it again

    def _train(self, live: _Live, spec: SweepSpec, executor: TrialExecutor, trial, params: dict) -> TrialOutcome:
        def on_start(run_id: str) -> None:
            with live.lock:
                trial.set_user_attr("run_id", run_id)  # a killed sweep's trial still leads to its run
            live.set_trial(trial.number, run_id=run_id, status=RunStatus.RUNNING)

        def on_epoch(epoch: EpochResult) -> str:
            with live.lock:
                trial.report(epoch.val_acc, epoch.epoch)
                prune = epoch.epoch < spec.epochs and trial.should_prune()
                epochs = next(t.epochs for t in live.snapshot.trials if t.number == trial.number) + (epoch,)
            live.set_trial(trial.number, epochs=epochs)
            if not prune:
                return ""
            return (f"pruned after epoch {epoch.epoch} of {spec.epochs} by the {spec.pruner} pruner: validation "
                    f"accuracy {epoch.val_acc:.2%} was behind the other trials' at that epoch")

        try:
            config = spec.trial_config(params)
        except ConfigError as exc:
            return TrialOutcome("", RunStatus.FAILED, (), str(exc))
        return executor.run_trial(TrialRequest(live.key, trial.number, config), on_start, on_epoch, live.stop)

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
        status = attrs.get("status", RunStatus.FINISHED)
        if status == RunStatus.RUNNING and not owner_alive(attrs.get("owner", "")):
            status = RunStatus.INTERRUPTED
        created = attrs.get("created_at", 0.0)
        ended = max((t.datetime_complete.timestamp() for t in study.get_trials(deepcopy=False)
                     if t.datetime_complete), default=None)
        return SweepSnapshot(sweep_id, spec, status, attrs.get("message", ""), tuple(trials), created, created, ended,
                             live=False)
