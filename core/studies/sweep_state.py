"""What a sweep is and how it stands: its settings (SweepSpec), and immutable snapshots of it and its trials.

SweepSnapshot is what a page polls (core.studies.sweep.Sweeps.snapshot) and what the CLI prints from: every trial's
params, status, epochs and run id, counts by status, the best trial, an ETA and a summary.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from ..config import ConfigError, RunConfig, RunStatus
from ..engine.devices import resolve_device
from ..engine.train import EpochResult, median_timed_epoch
from .sweep_space import DEFAULT_SPACE, SearchSpace, parse_space

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")
EXECUTORS = ("local", "ray")  # ray: Ray Tune (requirements-cluster.txt), core.studies.sweep_ray
MAX_TRIALS = 10_000
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
    parallel: int = 1  # trials at once (local: a GPU only, CPU trials share the cores; ray: each takes a CPU or GPU)
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


def optuna_result(status: str, epochs) -> tuple[str, float | None]:
    """The study's state for a trial that ended with this run status and epochs (COMPLETE, PRUNED or FAIL), and its
    value: the best validation accuracy (COMPLETE only)."""
    state = OPTUNA_STATES.get(status, "FAIL")
    value = max((e.val_acc for e in epochs), default=None)
    if state == "COMPLETE" and value is None:
        state = "FAIL"
    return state, value if state == "COMPLETE" else None


def tell_study(study, number: int, status: str, epochs) -> None:
    """Tell the study how trial `number` ended (optuna_result). Once its last point is told, the grid sampler stops
    the study, which Optuna allows only inside its own optimize loop (RuntimeError): outside it, here, the trial's
    state is already stored by then, and the budget ends the sweep, so that error says nothing."""
    from optuna.trial import TrialState

    state, value = optuna_result(status, epochs)
    try:
        study.tell(number, value, state=TrialState[state])
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def default_spec(**changes) -> SweepSpec:
    return SweepSpec(parse_space(DEFAULT_SPACE), **changes)


def check_runnable(spec: SweepSpec) -> None:
    """What only this machine can tell: its device, parallel local trials only on a GPU, Ray installed for the ray
    executor (DeviceError, ConfigError)."""
    if spec.executor == "ray":
        from .sweep_executors import ray_missing

        if ray_missing():
            raise ConfigError(ray_missing())
        return  # the device is each trial's, on whichever node Ray gives it
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
    owner: str = ""  # the session that started (or resumed) it, as RunManager runs have one
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
