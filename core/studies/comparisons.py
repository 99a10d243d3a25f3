"""Comparisons for the dashboard: a live registry of comparison runs whose legs train as RunManager runs.

A driver thread per comparison starts leg i+1 through the RunManager when leg i ends, so every leg trains
in a worker process like any run, and waits its turn in the manager's device queue. The page polls
`snapshot(comparison_id)`: an immutable ComparisonSnapshot with the legs' run snapshots filled in. Once
every leg has run, the same-start check (core.studies.parity) runs as a job in a training worker, and
the comparison is stored as a report (core.runs.reports) before it is shown as ended.

The summary maths and its sentences are core.studies.compare's, shared with the CLI.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field

from ..config import ConfigError, Phase, RunConfig, RunStatus, StoreError
from ..runs.live import Entry, LiveRegistry
from ..runs.reports import COMPARISON, recent_reports, stored_report
from .compare import DEFAULT_TARGET, ComparisonSummary, LegRun, comparison_payload, comparison_title, summarize
from .cpuload import ContentionMeter, worker_children_ticks
from .legs import Leg, check_legs

START_CHECK_JOB = "core.studies.parity:start_check_job"  # what the worker runs once the legs have trained


@dataclass(frozen=True)
class ComparisonSnapshot:
    comparison_id: str
    base: RunConfig
    legs: tuple[Leg, ...]
    phases: tuple[Phase, ...]
    status: str  # queued, running, finished, stopped, failed
    message: str = ""
    current: int = -1  # the leg training now
    run_ids: tuple[str, ...] = ()
    runs: tuple = ()  # RunSnapshot (or None) per started leg
    overlap: str = ""  # other runs trained meanwhile: timings may be distorted
    created_at: float = field(default_factory=time.time)
    live: bool = True
    other_cpu: tuple = ()  # per finished leg: share of all cores other processes kept busy meanwhile
    start_checks: tuple = ()  # per leg: its core.studies.parity.start_checks row, once the legs have trained

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.QUEUED, RunStatus.RUNNING)

    def stage(self) -> str:
        """What an active comparison is doing now, in words, read from the current leg's own status: a leg
        that has ended is never shown as training while the next one waits for its turn."""
        if not self.active:
            return ""
        n = len(self.legs)
        run = self.runs[self.current] if 0 <= self.current < len(self.runs) else None
        if run is None:
            return self.message or "waiting to start"
        leg = f"leg {self.current + 1} of {n} ({self.legs[self.current].label()})"
        if run.status == RunStatus.QUEUED:
            ahead = getattr(run, "queue_ahead", 0)
            return f"{leg} queued: {ahead} run{'s' if ahead != 1 else ''} ahead of it on the device" if ahead else \
                f"{leg} queued for the device"
        if run.status == RunStatus.LOADING:
            return f"{leg} loading data and model"
        if run.active:
            return f"{leg} training, epoch {min(len(run.epochs) + 1, self.planned_epochs)} of {self.planned_epochs}"
        done = f"{leg} {run.status} after {len(run.epochs)} epoch{'s' if len(run.epochs) != 1 else ''}"
        return f"{done}; {self.message}" if self.message else done

    @property
    def planned_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def leg_runs(self) -> list[LegRun]:
        out = []
        for i, (leg, run_id, snap) in enumerate(zip(self.legs, self.run_ids, self.runs)):
            other = self.other_cpu[i] if i < len(self.other_cpu) else None
            if snap is None:
                out.append(LegRun(leg, RunStatus.FAILED, message="its run is no longer in the store", run_id=run_id))
            else:
                out.append(LegRun(leg, snap.status, tuple(snap.epochs), snap.test_acc, snap.device, snap.message,
                                  run_id=run_id, other_cpu_share=other,
                                  start=self.start_checks[i] if i < len(self.start_checks) else None))
        return out

    def summary(self, target: float = DEFAULT_TARGET) -> ComparisonSummary:
        return summarize(self.leg_runs(), target, self.base)


class _Live(Entry):
    """What drives one comparison besides its snapshot: the session that owns its legs, and Stop."""

    def __init__(self, registry: LiveRegistry, comparison_id: str, owner: str):
        super().__init__(registry, comparison_id)
        self.owner = owner
        self.stop = threading.Event()


class Comparisons:
    """Comparison runs for a long-lived UI process. A driver thread per comparison starts leg i+1
    through the RunManager when leg i ends, so every leg trains in a worker process like any run."""

    POLL_S = 0.1

    def __init__(self, manager, target: float = DEFAULT_TARGET):
        self.manager = manager
        self.target = target
        self._live: LiveRegistry[ComparisonSnapshot, _Live] = LiveRegistry()

    def start(self, base: RunConfig, legs: list[Leg], phases: tuple[Phase, ...] | None = None,
              owner: str = "") -> str:
        if not legs:
            raise ConfigError("a comparison needs at least one leg")
        check_legs(legs, getattr(self.manager, "cpu_threads", None))
        phases = tuple(phases or (Phase(base.epochs, base.lr),))
        base = base.replace(epochs=phases[0].epochs, lr=phases[0].lr)
        comparison_id = "c" + os.urandom(5).hex()
        live = self._live.add(_Live(self._live, comparison_id, owner),
                              ComparisonSnapshot(comparison_id, base, tuple(legs), phases, RunStatus.QUEUED))
        self._live.drive(comparison_id, self._drive, live, name=f"compare-{comparison_id}")
        return comparison_id

    def stop(self, comparison_id: str) -> None:
        live = self._live.entry(comparison_id)
        if live is None:
            return
        live.stop.set()
        snap = live.snapshot
        if 0 <= snap.current < len(snap.run_ids):
            self.manager.stop(snap.run_ids[snap.current])

    def wait(self, comparison_id: str, timeout: float | None = None) -> ComparisonSnapshot | None:
        self._live.wait(comparison_id, timeout)
        return self.snapshot(comparison_id)

    def active(self) -> list[ComparisonSnapshot]:
        return self._live.active()

    def snapshot(self, comparison_id: str) -> ComparisonSnapshot | None:
        snap = self._live.get(comparison_id)
        if snap is not None:
            return dataclasses.replace(snap, runs=tuple(self.manager.snapshot(r) for r in snap.run_ids))
        return self._stored(comparison_id)

    def recent(self, limit: int = 20) -> list[dict]:
        return recent_reports(self.manager.store, COMPARISON, limit)

    def _stored(self, comparison_id: str) -> ComparisonSnapshot | None:
        payload = stored_report(self.manager.store, comparison_id, COMPARISON)
        if payload is None:
            return None
        run_ids = tuple(payload["run_ids"])
        return ComparisonSnapshot(comparison_id, RunConfig.from_dict(payload["base"]),
                                  tuple(Leg.from_dict(d) for d in payload["legs"]),
                                  tuple(Phase(e, lr) for e, lr in payload["phases"]), payload["status"],
                                  payload.get("message", ""), -1, run_ids,
                                  tuple(self.manager.snapshot(r) for r in run_ids), payload.get("overlap", ""),
                                  payload["created_at"], live=False,
                                  other_cpu=tuple(payload.get("other_cpu_share") or ()),
                                  start_checks=tuple(payload.get("start_checks") or ()))

    def _drive(self, live: _Live) -> None:
        snap = live.snapshot
        status, message = RunStatus.FINISHED, ""
        try:
            for i, leg in enumerate(snap.legs):
                if live.stop.is_set():
                    break
                self._wait_for_spare(live)
                if live.stop.is_set():
                    break
                run_id = self.manager.start(leg.config(snap.base), owner=live.owner or snap.comparison_id,
                                            phases=snap.phases)
                live.update(status=RunStatus.RUNNING, current=i, run_ids=live.snapshot.run_ids + (run_id,), message="")
                if live.stop.is_set():  # Stop pressed between the check above and the start
                    self.manager.stop(run_id)
                meter = ContentionMeter(own_ticks=worker_children_ticks)  # the training workers are "us"
                self._follow(live, run_id)
                live.update(other_cpu=live.snapshot.other_cpu + (meter.share(),),
                            message=f"next: leg {i + 2}" if i + 1 < len(snap.legs) else "")
            if live.stop.is_set():
                status = RunStatus.STOPPED
                message = "stopped: the legs that did not finish are shown as far as they got"
            elif live.snapshot.run_ids:
                live.update(message="checking that the legs start from the same numbers")
                live.update(start_checks=tuple(self._check_start(live)))
        except Exception as exc:  # e.g. the manager shut down: the page shows why
            status, message = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
        # Stored before it is published as ended: whoever sees it ended can also reload it.
        ended = dataclasses.replace(live.snapshot, status=status, message=message, current=-1)
        self._save(dataclasses.replace(ended, runs=tuple(self.manager.snapshot(r) for r in ended.run_ids)))
        live.update(status=status, message=message, current=-1)

    def _wait_for_spare(self, live: _Live, timeout: float = 180.0) -> None:
        """Let a spare worker that is still starting finish before the next leg trains."""
        deadline = time.monotonic() + timeout
        if self.manager.worker_starting() and live.snapshot.current >= 0:
            live.update(message=f"next: leg {live.snapshot.current + 2}, once a training process has started")
        while self.manager.worker_starting() and time.monotonic() < deadline and not live.stop.is_set():
            time.sleep(self.POLL_S)

    def _check_start(self, live: _Live, timeout: float = 300.0) -> list[dict]:
        """core.studies.parity's same-start rows for the legs that ran, from a training worker (its thread setting
        and CUDA context, not the web server's), as a job outside the device queues: nothing it does is timed, and
        a run started meanwhile must not hold it up. A check that cannot run says why on every leg."""
        snap = live.snapshot
        legs = snap.legs[:len(snap.run_ids)]
        answer: dict = {}

        def on_message(kind, *body):
            answer[kind] = body[0]

        deadline = time.monotonic() + timeout
        outcome = self.manager.run_job(
            self.manager.queue_job(()), START_CHECK_JOB, {"base": snap.base.to_dict(),
                                                          "legs": [leg.spec() for leg in legs]},
            on_message, live.stop, give_up=lambda: live.stop.is_set() or time.monotonic() > deadline)
        if "job_done" in answer:
            return answer["job_done"]
        if live.stop.is_set():
            why = "the check stopped"
        elif outcome == "given up":
            why = f"the check took over {timeout:.0f} s"
        elif outcome == RunStatus.STOPPED:
            why = "the check could not start: the run manager is shut down"
        else:
            why = f"the check failed: {answer.get('error') or outcome}"
        return [{"spec": leg.spec(), "error": why} for leg in legs]

    def _follow(self, live: _Live, run_id: str) -> None:
        """Wait for the leg's run to end, noting other runs that train meanwhile (they share the machine)."""
        own = set(live.snapshot.run_ids)
        while True:
            run = self.manager.wait(run_id, self.POLL_S)
            if not live.snapshot.overlap:
                others = [r for r in self.manager.active_runs() if r.run_id not in own]
                if others:
                    live.update(overlap=f"{len(others)} other run(s) trained during this comparison, so its timings "
                                        f"may be distorted; run it again when nothing else trains")
            if run is None or not run.active:
                return

    def _save(self, snap: "ComparisonSnapshot") -> None:
        if self.manager.store is None:
            return
        payload = comparison_payload(snap.comparison_id, snap.base, list(snap.legs), snap.phases,
                                     snap.leg_runs(), snap.status, self.target, snap.created_at, snap.message,
                                     snap.overlap)
        try:
            self.manager.store.save_report(COMPARISON, payload, comparison_title(snap.base, list(snap.legs)),
                                           snap.comparison_id)
        except StoreError:
            pass
