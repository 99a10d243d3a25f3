"""Benchmark (not a test): the tutorial's pipeline vs the resident one vs the FLOP floor, in one process.

Measures, per device (`python -m core bench` prints it): median epoch seconds (warm-up epoch excluded) of each
pipeline, their ratio, the resident pipeline's ratio to the FLOP floor (model FLOPs / measured GEMM rate), and
validation and test accuracy after the tutorial's schedule (5 epochs at lr 0.5, then 5 at 0.1), with the CPU
threads used. Each measured part (GEMM rate, tutorial pipeline, resident pipeline) also records the
share of the machine that other processes used meanwhile (core.studies.cpuload), and the bench says which
ratio that distorted: under load on 2 cores the tutorial/resident ratio read 10.6x against 28x quiet.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

from ..config import TUTORIAL_SCHEDULE, RunConfig
from .cpuload import CONTENDED_SHARE, ContentionMeter, contention_note
from ..engine.data import ImageDataset
from ..engine.devices import device_label, gemm_flops_per_second, list_devices, synchronize
from ..engine.model import training_flops
from ..runs.training_run import TrainingRun
from ..engine.train import median_timed_epoch


PARTS = {"gemm": "the GEMM rate", "tutorial": "the tutorial pipeline", "resident": "the resident pipeline"}


def distortion_notes(row: dict) -> list[str]:
    """One sentence per part other processes distorted, then which of the printed ratios that skews."""
    shares = row.get("other_cpu_share") or {}
    notes = [note for part, what in PARTS.items() if (note := contention_note(shares.get(part), what))]
    busy = {part for part, share in shares.items() if share is not None and share > CONTENDED_SHARE}
    if busy & {"tutorial", "resident"}:
        notes.append(f"So the {row['speedup']:.1f}x tutorial/resident ratio is distorted (a contended resident "
                     f"pipeline reads low, a contended tutorial one high); measure again on a quiet machine.")
    if busy & {"gemm", "resident"}:
        notes.append(f"The {row['resident_over_floor']:.1f}x FLOP-floor ratio is distorted too.")
    return notes


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def busy_text(share: float | None) -> str:
    if share is None:
        return "other processes' CPU use not measurable here (no /proc)"
    return f"other processes kept {share:.0%} of the {os.cpu_count()} cores busy meanwhile"


def bench_devices() -> list[str]:
    """The device kinds a bench measures by default: every available one but MPS."""
    return [d.kind for d in list_devices() if d.available and d.kind != "mps"]


def run_bench(dataset: ImageDataset, kinds: list[str] | None = None, tutorial_epochs: int = 3,
              log: Callable[[str], None] = lambda text: None) -> list[dict]:
    """One row per device kind (default bench_devices()): the two pipelines' median epoch times, the FLOP floor,
    accuracies and other processes' CPU share per measured part. `log` gets each step's progress line."""
    results = []
    for kind in bench_devices() if kinds is None else kinds:
        device = torch.device(kind)
        base = RunConfig(device=kind, epochs=TUTORIAL_SCHEDULE[0].epochs, lr=TUTORIAL_SCHEDULE[0].lr)
        log(f"== {device_label(device)}, {torch.get_num_threads()} CPU threads")
        shares = {}
        meter = ContentionMeter()
        rate = gemm_flops_per_second(device)
        shares["gemm"] = meter.share()
        log(f"GEMM rate: {rate / 1e9:.1f} GFLOP/s; {busy_text(shares['gemm'])}")

        log(f"tutorial pipeline (per-sample ToTensor + DataLoader), {tutorial_epochs} epochs ...")
        tutorial = TrainingRun(base.replace(pipeline="dataloader"), dataset=dataset)
        meter = ContentionMeter()
        tutorial.train_phase(tutorial_epochs, TUTORIAL_SCHEDULE[0].lr,
                             on_epoch=lambda e: log(f"  epoch {e.epoch}: {e.seconds:.2f}s val_acc {e.val_acc:.2%}"))
        shares["tutorial"] = meter.share()
        log(f"  {busy_text(shares['tutorial'])}")

        log("resident pipeline, tutorial schedule 5@0.5 + 5@0.1 ...")
        resident = TrainingRun(base, dataset=dataset)
        meter = ContentionMeter()
        resident.run_schedule(TUTORIAL_SCHEDULE,
                              on_epoch=lambda e: log(f"  epoch {e.epoch}: {e.seconds:.3f}s val_acc {e.val_acc:.2%}"))
        shares["resident"] = meter.share()
        log(f"  {busy_text(shares['resident'])}")

        flops = training_flops(dataset.input_size, base.hidden_sizes, dataset.num_classes, resident.trainer.n_train,
                               resident.trainer.n_val)  # an epoch: train, then validate
        floor = flops / rate
        tutorial_s, resident_s = median_timed_epoch(tutorial.epochs), median_timed_epoch(resident.epochs)
        row = {
            "device": device_label(device),
            "threads": torch.get_num_threads() if kind == "cpu" else None,
            "gemm_gflops": rate / 1e9,
            "epoch_gflop": flops / 1e9,
            "flop_floor_s": floor,
            "tutorial_epoch_s": tutorial_s,
            "resident_epoch_s": resident_s,
            "speedup": tutorial_s / resident_s,
            "resident_over_floor": resident_s / floor,
            "tutorial_val_acc_epoch1": tutorial.epochs[0].val_acc,
            "resident_val_acc_epoch1": resident.epochs[0].val_acc,
            "val_acc_after_schedule": resident.epochs[-1].val_acc,
            "test_acc_after_schedule": resident.test_acc,
            "data_source": dataset.source,
            "other_cpu_share": shares,  # per part: share of all cores other processes kept busy while it ran
        }
        row["distorted"] = distortion_notes(row)
        results.append(row)
        synchronize(device)
    return results


def row_text(row: dict) -> str:
    """A row as the lines people read after the bench (the CLI prints them, then the row's distortion notes)."""
    return (f"\n{row['device']} ({row['threads'] or '-'} CPU threads)\n"
            f"  tutorial pipeline  {row['tutorial_epoch_s']:8.3f} s/epoch (median, warm-up excluded)\n"
            f"  resident pipeline  {row['resident_epoch_s']:8.3f} s/epoch  -> {row['speedup']:.1f}x faster\n"
            f"  FLOP floor         {row['flop_floor_s']:8.3f} s/epoch  ({row['epoch_gflop']:.1f} GFLOP at "
            f"{row['gemm_gflops']:.0f} GFLOP/s) -> resident is {row['resident_over_floor']:.1f}x the floor\n"
            f"  after 5@0.5 + 5@0.1: val acc {row['val_acc_after_schedule']:.2%}, "
            f"test acc {row['test_acc_after_schedule']:.2%}\n"
            f"  others' CPU while timed: " + ", ".join(f"{part} {_share(share)}"
                                                        for part, share in row["other_cpu_share"].items()))
