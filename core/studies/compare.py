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

`run_in_process` runs the legs in this process (the CLI); core.studies.comparisons runs them as
RunManager runs, each in a worker process (the dashboard), and summarizes them with the same functions.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from ..config import Phase, RunConfig, RunStatus, TrainingError
from ..engine.cuda_graph import graph_support
from ..engine.train import EpochResult, median_timed_epoch
from .cpuload import ContentionMeter, contention_note
from .legs import DEVICE_NAMES, Leg
from .parity import SAME_START_BAR, passes, start_checks

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
    # A leg with only its warm-up epoch has no median: its warm-up time is shown apart, never as its speed.
    medians = [median_timed_epoch(run.epochs, warmup_fallback=False) for run in leg_runs]
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


# -- in this process (the CLI) ----------------------------------------------------------------------
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
