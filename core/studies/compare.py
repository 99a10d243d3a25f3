"""Comparison runs: one experiment on several legs (device, CPU threads, data pipeline), one after another.

Every leg trains the same RunConfig except for its device, thread count, pipeline and CUDA-graph
switch, so all legs start from the same weights (seeded init on the CPU) and see the same batches
(a CPU generator orders them): their curves are comparable epoch by epoch. Legs run one after the
other, never at once, so one leg's work cannot slow another's clock.

The summary compares each leg with the first: median epoch seconds with the warm-up epoch left out
(it carries one-off costs: allocation, BLAS/cuBLAS initialisation), samples/s, speedup, time to a
target validation accuracy, whether the legs start the same (core.studies.parity: identical initial weights,
first batch's loss and gradient within rounding), and how far their per-epoch validation losses
drift apart afterwards (rounding differences compound over thousands of SGD steps: expected, not a fault).

`run_in_process` runs the legs in this process (the CLI); `Comparisons` runs them as RunManager
runs, each in a worker process (the dashboard).
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ..config import (PROJECT_ROOT, ConfigError, DeviceError, Phase, RunConfig, RunStatus, StoreError,
                      TrainingError)
from .cpuload import ContentionMeter, contention_note, worker_children_ticks
from ..engine.cuda_graph import graph_support
from .legs import DEVICE_NAMES, LEG_DEVICES, Leg, default_legs, unavailable_reason  # noqa: F401 (re-exported)
from .parity import SAME_START_BAR, passes, start_checks
from ..runs.reports import COMPARISON, open_reports, recent_reports
from ..engine.train import EpochResult

DEFAULT_TARGET = 0.95  # validation accuracy for "time to target"


# -- summary ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LegRun:
    """What a leg produced: its epochs and how it ended (the summary's input)."""

    leg: Leg
    status: str
    epochs: tuple[EpochResult, ...] = ()
    test_acc: float | None = None
    device_label: str = ""
    message: str = ""
    startup_s: float | None = None  # building the trainer: data and model to the device (CUDA context)
    run_id: str = ""
    other_cpu_share: float | None = None  # share of all cores other processes kept busy while it trained
    start: dict | None = None  # its row of core.studies.parity.start_checks (None: not checked)


@dataclass(frozen=True)
class LegSummary:
    index: int
    label: str
    spec: str
    status: str
    device: str
    epochs: int
    warmup_epoch_s: float | None  # the first epoch, shown apart, never averaged in
    median_epoch_s: float | None  # median of the other epochs
    samples_per_s: float | None  # training samples / median epoch seconds
    speedup: float | None  # first leg's median epoch seconds / this leg's
    time_to_target_s: float | None  # training wall clock (warm-up epoch included) until val acc >= target
    target_epoch: int | None
    final_val_acc: float | None
    test_acc: float | None
    start_loss_rel_diff: float | None  # first batch's loss vs the first leg's (relative; None: baseline/unchecked)
    start_grad_rel_diff: float | None  # largest per-tensor relative gradient difference on the first batch
    weights_match: bool | None  # same initial-weight checksum as the first leg
    same_start: bool | None  # weights match and both differences <= SAME_START_BAR
    val_loss_drift: float | None  # largest per-epoch relative val-loss difference from the first leg
    val_acc_drift_pts: float | None  # largest per-epoch validation-accuracy difference, percentage points
    graphs: str  # "on", or why the step is eager ("" off CUDA)
    startup_s: float | None = None
    message: str = ""
    run_id: str = ""
    other_cpu_share: float | None = None
    start_error: str = ""  # why this leg's same-start check could not run
    val_loss_drift_by_epoch: tuple[float, ...] = ()  # relative val-loss difference from the first leg, per epoch


@dataclass(frozen=True)
class ComparisonSummary:
    legs: tuple[LegSummary, ...]
    target: float
    same_start: float | None  # the largest first-batch loss or gradient difference over the legs (relative)
    same_start_ok: bool | None  # every checked leg starts the same as the first (None: nothing checked)
    same_start_text: str
    drift: float | None  # the largest per-epoch val-loss drift over the legs (relative)
    drift_text: str
    pipeline_text: str
    contention_text: str = ""  # legs whose timings other processes distorted

    @property
    def parity_text(self) -> str:
        """Both sentences, start first (the name older scripts read)."""
        return " ".join(t for t in (self.same_start_text, self.drift_text) if t)

    def to_dict(self) -> dict:
        return {"target": self.target, "same_start": self.same_start, "same_start_ok": self.same_start_ok,
                "same_start_bar": SAME_START_BAR, "same_start_text": self.same_start_text, "drift": self.drift,
                "drift_text": self.drift_text, "parity_text": self.parity_text, "pipeline_text": self.pipeline_text,
                "contention_text": self.contention_text,
                "legs": [dataclasses.asdict(leg) for leg in self.legs]}


def timed_epochs(epochs) -> list[EpochResult]:
    """The epochs that count for speed: all but the warm-up one, which is never averaged in."""
    return [e for e in epochs if not e.warmup]


def time_to_target(epochs, target: float) -> tuple[float | None, int | None]:
    for e in epochs:
        if e.val_acc >= target:
            return e.elapsed, e.epoch
    return None, None


def val_loss_drift(reference, other) -> tuple[float, ...]:
    """|a - b| / |a| of the validation loss for each epoch both legs reached."""
    return tuple(abs(a.val_loss - b.val_loss) / max(abs(a.val_loss), 1e-12) for a, b in zip(reference, other))


def val_acc_drift_points(reference, other) -> float | None:
    """Largest per-epoch validation-accuracy difference, in percentage points (None when no epoch is shared)."""
    pairs = list(zip(reference, other))
    return max(abs(a.val_acc - b.val_acc) * 100 for a, b in pairs) if pairs else None


def summarize(leg_runs: list[LegRun], target: float = DEFAULT_TARGET, base: RunConfig | None = None
              ) -> ComparisonSummary:
    base = base or RunConfig()
    medians = []
    for run in leg_runs:
        timed = timed_epochs(run.epochs)
        medians.append(statistics.median(e.seconds for e in timed) if timed else None)
    reference = leg_runs[0].epochs if leg_runs else ()
    rows = []
    for i, (run, median) in enumerate(zip(leg_runs, medians)):
        n_train = round(run.epochs[0].samples_per_s * run.epochs[0].seconds) if run.epochs else 0
        seconds, epoch = time_to_target(run.epochs, target)
        graphed, why = graph_support(run.leg.config(base), run.leg.device)
        drift = val_loss_drift(reference, run.epochs) if i else ()
        start = run.start or {}
        rows.append(LegSummary(
            index=i, label=run.leg.label(), spec=run.leg.spec(), status=run.status, device=run.device_label,
            epochs=len(run.epochs),
            warmup_epoch_s=next((e.seconds for e in run.epochs if e.warmup), None),
            median_epoch_s=median,
            samples_per_s=n_train / median if median else None,
            speedup=medians[0] / median if median and medians[0] else None,
            time_to_target_s=seconds, target_epoch=epoch,
            final_val_acc=run.epochs[-1].val_acc if run.epochs else None,
            test_acc=run.test_acc,
            start_loss_rel_diff=start.get("loss_rel_diff"), start_grad_rel_diff=start.get("grad_rel_diff"),
            weights_match=start.get("weights_match"), same_start=passes(start) if i else None,
            val_loss_drift=max(drift) if drift else None,
            val_acc_drift_pts=val_acc_drift_points(reference, run.epochs) if i else None,
            graphs="on" if graphed else ("" if run.leg.device != "cuda" else why),
            startup_s=run.startup_s, message=run.message, run_id=run.run_id, other_cpu_share=run.other_cpu_share,
            start_error=start.get("error", ""), val_loss_drift_by_epoch=drift))
    checked = [r for r in rows[1:] if r.same_start is not None]
    same_start = max((max(r.start_loss_rel_diff, r.start_grad_rel_diff) for r in checked), default=None)
    same_start_ok = all(r.same_start for r in checked) if checked else None
    drifts = [r.val_loss_drift for r in rows[1:] if r.val_loss_drift is not None]
    drift = max(drifts) if drifts else None
    contention = " ".join(note for row in rows if (note := contention_note(
        row.other_cpu_share, f"leg {row.index + 1} ({row.label})")))
    return ComparisonSummary(tuple(rows), target, same_start, same_start_ok, same_start_sentence(rows),
                             drift, drift_sentence(leg_runs, rows, base), pipeline_sentence(leg_runs, rows),
                             contention)


def same_start_sentence(rows: list[LegSummary]) -> str:
    """Whether the legs began from the same numbers: the check that must hold to rounding."""
    if len(rows) < 2:
        return ""
    failed = [r for r in rows[1:] if r.same_start is False]
    unchecked = [r for r in rows[1:] if r.same_start is None]
    if failed:
        parts = []
        for r in failed:
            if not r.weights_match:
                parts.append(f"leg {r.index + 1}'s initial weights differ from leg 1's (checksums)")
            else:
                parts.append(f"leg {r.index + 1}'s first-batch loss differs by {r.start_loss_rel_diff:.1e} and its "
                             f"gradient by {r.start_grad_rel_diff:.1e} relative")
        return (f"Not the same start: {'; '.join(parts)}, more than rounding (bar {SAME_START_BAR:.0e}). These legs "
                f"do not compute the same numbers (different settings, a reduced-precision mode, or a fault), so "
                f"compare their times, not their curves.")
    if len(unchecked) == len(rows) - 1:
        errors = sorted({r.start_error for r in unchecked if r.start_error})
        return ("Same start: not checked" + (f" ({'; '.join(errors)})." if errors else "."))
    worst = max(max(r.start_loss_rel_diff, r.start_grad_rel_diff) for r in rows[1:] if r.same_start)
    agreement = "identical" if worst == 0 else f"within {worst:.1e} relative"
    text = (f"Same start: every leg began from identical initial weights (checksum) and computed its first batch's "
            f"loss and gradient {agreement} of leg 1's (bar {SAME_START_BAR:.0e}): the legs do the same arithmetic, "
            f"to rounding.")
    if unchecked:
        text += f" Not checked: {', '.join(f'leg {r.index + 1}' for r in unchecked)}."
    return text


def drift_sentence(leg_runs: list[LegRun], rows: list[LegSummary], base: RunConfig) -> str:
    """How far the per-epoch validation losses drift apart after the start: reported, never an alarm."""
    drifting = [r for r in rows[1:] if r.val_loss_drift_by_epoch]
    if not drifting:
        return ""
    worst = max(drifting, key=lambda r: r.val_loss_drift)
    if worst.val_loss_drift == 0:
        return ("Drift: none. Per-epoch validation losses are bit-identical on every leg (same seed, same initial "
                "weights, same batch order, and here the same summation order too).")
    epoch = worst.val_loss_drift_by_epoch.index(worst.val_loss_drift) + 1
    n_train = round(leg_runs[0].epochs[0].samples_per_s * leg_runs[0].epochs[0].seconds) if leg_runs[0].epochs else 0
    steps = -(-n_train // base.batch_size) * len(worst.val_loss_drift_by_epoch) if n_train else 0
    gpu = any(r.leg.device != "cpu" for r in leg_runs)
    order = ("a GPU adds each matrix product's partial sums in a different order than the CPU" if gpu else
             "different thread counts split each matrix product's sums into different partial sums")
    over = f" over {steps:,} SGD steps" if steps else ""
    accuracy = ("the same validation accuracy" if not worst.val_acc_drift_pts else
                f"validation accuracy within {worst.val_acc_drift_pts:.2f} points")
    return (f"Drift: per-epoch validation losses drift apart by up to {worst.val_loss_drift:.1e} relative "
            f"(leg {worst.index + 1}, epoch {epoch}; {accuracy}). Expected, not a fault: {order}, float addition "
            f"is not associative, and those last-bit differences compound{over}. The same leg run twice gives "
            f"identical numbers.")


def pipeline_sentence(leg_runs: list[LegRun], rows: list[LegSummary]) -> str:
    """One plain sentence per tutorial-pipeline leg that has a resident twin on the same device."""
    sentences = []
    for run, row in zip(leg_runs, rows):
        if run.leg.pipeline != "dataloader" or not row.median_epoch_s:
            continue
        twins = [(lr.leg.threads == run.leg.threads, r) for lr, r in zip(leg_runs, rows)
                 if lr.leg.device == run.leg.device and lr.leg.pipeline == "resident" and r.median_epoch_s]
        if not twins:
            continue
        same_threads = [r for same, r in twins if same]  # the fairest twin: same device and thread count
        twin = min(same_threads or [r for _, r in twins], key=lambda r: r.median_epoch_s)
        tutorial_s, resident_s = row.median_epoch_s, twin.median_epoch_s
        slower = tutorial_s / resident_s
        waiting = max(0.0, 1 - resident_s / tutorial_s)
        if run.leg.device == "cpu":
            sentences.append(
                f"The tutorial's pipeline took {tutorial_s:.2f} s per epoch against {resident_s:.2f} s for the same "
                f"training with the data resident ({slower:.0f}x slower): {waiting:.0%} of its epoch goes to preparing "
                f"batches one image at a time (PIL image, ToTensor, DataLoader collate), not to the network's "
                f"arithmetic. On a GPU this CPU work stays the same, and the GPU waits for it.")
        else:
            sentences.append(
                f"The tutorial's pipeline took {tutorial_s:.2f} s per epoch on {DEVICE_NAMES[run.leg.device]} against "
                f"{resident_s:.2f} s with the data resident on the GPU ({slower:.0f}x slower): the GPU's own work "
                f"fits in {resident_s:.2f} s, so for about {waiting:.0%} of each epoch it sits idle, waiting for the "
                f"CPU to convert images one at a time and copy each batch over.")
    return " ".join(sentences)


def leg_identity(leg: Leg, default_threads: int | None = None) -> str:
    """What the leg computes with: its spec, with a CPU leg's unnamed thread count read as the default."""
    if leg.device == "cpu" and leg.threads is None and default_threads is not None:
        leg = dataclasses.replace(leg, threads=default_threads)
    return leg.spec()


def duplicate_legs_message(legs: list[Leg], default_threads: int | None = None) -> str:
    """'' when every leg differs, else one sentence naming the repeats (a repeated leg measures nothing new)."""
    seen: dict[str, int] = {}
    repeats, unnamed_threads = [], False
    for i, leg in enumerate(legs):
        key = leg_identity(leg, default_threads)
        if key in seen:
            first = legs[seen[key]]
            repeats.append(f"leg {i + 1} ({leg.spec()}) repeats leg {seen[key] + 1} ({first.spec()})")
            unnamed_threads |= leg.device == "cpu" and (leg.threads is None) != (first.threads is None)
        else:
            seen[key] = i
    if not repeats:
        return ""
    default = f"; a CPU leg without threads= uses {default_threads}" if unnamed_threads else ""
    return (f"{'; '.join(repeats)}{default}. Each leg must differ in device, threads, pipeline or graphs: "
            f"drop the repeat.")


# -- in this process (the CLI) ----------------------------------------------------------------------
def check_legs(legs: list[Leg], default_threads: int | None = None) -> None:
    """Fail before training anything when a leg's device is missing or a leg repeats another."""
    repeats = duplicate_legs_message(legs, default_threads)
    if repeats:
        raise ConfigError(repeats)
    for leg in legs:
        reason = unavailable_reason(leg)
        if reason:
            raise DeviceError(f"leg {leg.spec()}: {reason}")


def run_in_process(base: RunConfig, legs: list[Leg], phases: list[Phase], *, dataset=None, data_dir=None,
                   store=None, cancel: threading.Event | None = None, on_epoch=None, on_leg=None) -> list[LegRun]:
    """Train each leg in turn in this process; a leg that fails is recorded and the next one runs."""
    from ..engine.data import load_dataset
    from ..runs.training_run import TrainingRun

    cancel = cancel or threading.Event()
    dataset = dataset or load_dataset(base.dataset, data_dir)
    results: list[LegRun] = []
    for i, leg in enumerate(legs):
        if cancel.is_set():
            break
        config = leg.config(base).replace(epochs=phases[0].epochs, lr=phases[0].lr)
        start = time.perf_counter()
        try:
            run = TrainingRun(config, dataset=dataset, store=store, cancel=cancel, origin="compare")
        except TrainingError as exc:
            results.append(LegRun(leg, RunStatus.FAILED, message=str(exc)))
            continue
        startup = time.perf_counter() - start
        if on_leg is not None:
            on_leg(i, leg, run)
        meter = ContentionMeter()
        try:
            run.run_schedule(phases, on_epoch=(lambda e, i=i: on_epoch(i, e)) if on_epoch else None)
        except TrainingError as exc:
            results.append(LegRun(leg, RunStatus.FAILED, tuple(run.epochs), None, run.trainer.device_label, str(exc),
                                  startup, run.id, meter.share()))
            continue
        results.append(LegRun(leg, run.status, tuple(run.epochs), run.test_acc, run.trainer.device_label,
                              run.message, startup, run.id, meter.share()))
    if results and not cancel.is_set():  # after every leg's clock has stopped: the check never shares one
        checks = start_checks(base, [r.leg for r in results], dataset)
        results = [dataclasses.replace(r, start=check) for r, check in zip(results, checks)]
    return results


def comparison_payload(comparison_id: str, base: RunConfig, legs: list[Leg], phases, leg_runs: list[LegRun],
                       status: str, target: float, created_at: float, message: str = "", overlap: str = "") -> dict:
    return {"id": comparison_id, "created_at": created_at, "status": status, "message": message,
            "overlap": overlap, "base": base.to_dict(), "legs": [leg.to_dict() for leg in legs],
            "phases": [[p.epochs, p.lr] for p in phases], "run_ids": [r.run_id for r in leg_runs],
            "startup_s": [r.startup_s for r in leg_runs], "other_cpu_share": [r.other_cpu_share for r in leg_runs],
            "start_checks": [r.start for r in leg_runs], "target": target,
            "summary": summarize(leg_runs, target, base).to_dict()}


def comparison_title(base: RunConfig, legs: list[Leg]) -> str:
    return f"{' vs '.join(leg.label() for leg in legs)}: {base.describe()}"


# -- through the RunManager (the dashboard) ---------------------------------------------------------


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


class _Live:
    def __init__(self, snapshot: ComparisonSnapshot, owner: str):
        self.snapshot = snapshot
        self.owner = owner
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def update(self, **changes) -> None:
        with self.lock:
            self.snapshot = dataclasses.replace(self.snapshot, **changes)


def spare_starting(manager) -> bool:
    """Whether the manager is starting a worker now (CPU seconds that would share the machine with a timed leg)."""
    return manager.worker_starting()


class Comparisons:
    """Comparison runs for a long-lived UI process. A driver thread per comparison starts leg i+1
    through the RunManager when leg i ends, so every leg trains in a worker process like any run."""

    POLL_S = 0.1

    def __init__(self, manager, target: float = DEFAULT_TARGET):
        self.manager = manager
        self.target = target
        self.reports = open_reports(manager.store)
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()

    def start(self, base: RunConfig, legs: list[Leg], phases: tuple[Phase, ...] | None = None,
              owner: str = "") -> str:
        if not legs:
            raise ConfigError("a comparison needs at least one leg")
        repeats = duplicate_legs_message(legs, getattr(self.manager, "cpu_threads", None))
        if repeats:
            raise ConfigError(repeats)
        for leg in legs:
            reason = unavailable_reason(leg)
            if reason:
                raise DeviceError(reason)
        phases = tuple(phases or (Phase(base.epochs, base.lr),))
        base = base.replace(epochs=phases[0].epochs, lr=phases[0].lr)
        comparison_id = "c" + os.urandom(5).hex()
        live = _Live(ComparisonSnapshot(comparison_id, base, tuple(legs), phases, RunStatus.QUEUED), owner)
        with self._lock:
            self._live[comparison_id] = live
        live.thread = threading.Thread(target=self._drive, args=(live,), name=f"compare-{comparison_id}", daemon=True)
        live.thread.start()
        return comparison_id

    def stop(self, comparison_id: str) -> None:
        live = self._live.get(comparison_id)
        if live is None:
            return
        live.stop.set()
        snap = live.snapshot
        if 0 <= snap.current < len(snap.run_ids):
            self.manager.stop(snap.run_ids[snap.current])

    def wait(self, comparison_id: str, timeout: float | None = None) -> ComparisonSnapshot | None:
        live = self._live.get(comparison_id)
        if live is not None and live.thread is not None:
            live.thread.join(timeout)
        return self.snapshot(comparison_id)

    def active(self) -> list[ComparisonSnapshot]:
        with self._lock:
            lives = list(self._live.values())
        return [live.snapshot for live in lives if live.snapshot.active]

    def snapshot(self, comparison_id: str) -> ComparisonSnapshot | None:
        live = self._live.get(comparison_id)
        if live is not None:
            with live.lock:
                snap = live.snapshot
            return dataclasses.replace(snap, runs=tuple(self.manager.snapshot(r) for r in snap.run_ids))
        return self._stored(comparison_id)

    def recent(self, limit: int = 20) -> list[dict]:
        return recent_reports(self.reports, COMPARISON, limit)

    def _stored(self, comparison_id: str) -> ComparisonSnapshot | None:
        if self.reports is None:
            return None
        try:
            payload = self.reports.get(comparison_id)
        except (KeyError, StoreError):
            return None
        if "legs" not in payload:  # another kind of report
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
        if spare_starting(self.manager) and live.snapshot.current >= 0:
            live.update(message=f"next: leg {live.snapshot.current + 2}, once a training process has started")
        while spare_starting(self.manager) and time.monotonic() < deadline and not live.stop.is_set():
            time.sleep(self.POLL_S)

    def _check_start(self, live: _Live, timeout: float = 300.0) -> list[dict]:
        """core.studies.parity's same-start rows for the legs that ran, from a process of its own (its own thread
        setting and CUDA context, not the web server's). A check that cannot run says why on every leg."""
        snap = live.snapshot
        legs = snap.legs[:len(snap.run_ids)]
        command = [sys.executable, "-m", "core.studies.parity", "--base", json.dumps(snap.base.to_dict())]
        for leg in legs:
            command += ["--leg", leg.spec()]
        if getattr(self.manager, "data_dir", None):
            command += ["--data-dir", str(self.manager.data_dir)]
        if getattr(self.manager, "cpu_threads", None):
            command += ["--default-threads", str(self.manager.cpu_threads)]
        try:
            process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
        except OSError as exc:
            return [{"spec": leg.spec(), "error": f"the check could not start: {exc}"} for leg in legs]
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if live.stop.is_set() or time.monotonic() > deadline:
                process.kill()
                process.wait()
                why = "stopped" if live.stop.is_set() else f"took over {timeout:.0f} s"
                return [{"spec": leg.spec(), "error": f"the check {why}"} for leg in legs]
            time.sleep(self.POLL_S)
        out, err = process.communicate()
        try:
            rows = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = " | ".join(err.strip().splitlines()[-3:]) or f"exit code {process.returncode}"
            return [{"spec": leg.spec(), "error": f"the check failed: {tail}"} for leg in legs]
        return rows

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
        if self.reports is None:
            return
        payload = comparison_payload(snap.comparison_id, snap.base, list(snap.legs), snap.phases,
                                     snap.leg_runs(), snap.status, self.target, snap.created_at, snap.message,
                                     snap.overlap)
        try:
            self.reports.save(COMPARISON, payload, comparison_title(snap.base, list(snap.legs)), snap.comparison_id)
        except StoreError:
            pass
