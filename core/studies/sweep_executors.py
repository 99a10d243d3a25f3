"""How a sweep's trials train: the TrialExecutor protocol, and LocalExecutor (RunManager runs in warm workers).

An executor trains each trial as an ordinary run tagged with its sweep and trial number, tells the sweep every epoch
as it arrives (the sweep answers with a reason to prune, or ''), and stops a trial when the sweep stops. Another
executor whose engine runs its own loop (core.studies.sweep_ray.RayExecutor: Ray Tune asks the study and schedules
the trials) has `drive(SweepDrive, stop)` instead of run_trial; core.studies.sweep picks one by SweepSpec.executor.
"""
from __future__ import annotations

import os

import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from ..config import RunConfig, RunStatus
from ..engine.train import EpochResult

@dataclass(frozen=True)
class TrialRequest:
    sweep_id: str
    number: int
    config: RunConfig  # its epochs are the trial's
    owner: str = ""  # who may stop its run without asking (the sweep's owner; the sweep id when none)

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

    def run_trial(self, request: TrialRequest, on_status: Callable[[str, str], None],
                  on_epoch: Callable[[EpochResult], str], stop: threading.Event) -> TrialOutcome:
        """Train one trial: on_status(run_id, status) once its run exists and whenever its status changes while it is
        active (queued, loading, running), on_epoch(result) after every epoch as it arrives,
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

    def run_trial(self, request: TrialRequest, on_status, on_epoch, stop: threading.Event) -> TrialOutcome:
        run_id = self.manager.start(request.config, owner=request.owner or request.sweep_id, tags=request.tags)
        seen, asked_to_end, status = 0, False, ""
        while True:
            snap = self.manager.wait(run_id, self.POLL_S)
            if snap.active and snap.status != status:
                status = snap.status
                on_status(run_id, status)
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


INSTALL_RAY = "pip install -r requirements-cluster.txt"


def before_importing_ray() -> None:
    """Settings Ray reads when it is first imported in this process. Its core would install its own SIGTERM/SIGINT
    handlers here: a dashboard server that had run a Ray sweep then died of SIGABRT when stopped."""
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def ray_missing() -> str:
    """'' when Ray Tune can be imported here; else a one-line reason and what to install."""
    before_importing_ray()
    try:
        import ray.tune  # noqa: F401 (~1 s: only a sweep on Ray asks)
    except ImportError:
        return f"executor ray: Ray Tune is not installed in this environment; install it with {INSTALL_RAY}"
    return ""

