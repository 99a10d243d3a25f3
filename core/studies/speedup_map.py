"""Speedup map: where the GPU (or more CPU threads) pays off, over model width, depth and batch size.

For every cell of a grid (hidden size x hidden layers x batch size) and every leg, a fresh model
takes `warmup_steps` untimed training steps (allocation, BLAS/cuBLAS initialisation, CUDA-graph
capture), then `steps` timed ones between two device synchronisations. A step is the Trainer's
resident step: a gather from the real training images already on the device, then the same
core.engine.step.TrainStep the Trainer calls (hand-written forward and backward, the optimizer
update), replayed as a CUDA graph where the Trainer would (cuda_graph.fastest_step).

Each cell reports every leg's seconds and samples/s, the speedup of each leg over the first, and
the FLOP-floor ratio: measured time / (the step's matmul FLOPs / the leg's measured GEMM rate).
A ratio near 1 means the leg runs at its hardware's matmul speed; a large one, that per-op overhead
dominates (small models) and more hardware cannot help.

Cells run one after another, every leg within a cell, so a cancelled map keeps complete cells.

Before it starts, a map's duration is estimated from its FLOPs (core.engine.model.macs_per_sample) at each
leg's measured GEMM rate, plus a per-step overhead for the eager ops: the CLI prints it, and above
a minute asks (on a terminal) or wants --yes (otherwise); the dashboard shows it and warns.
core.studies.map_jobs runs maps for the dashboard.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import torch

from ..config import MAX_BATCH_SIZE, MAX_HIDDEN_LAYERS, MAX_HIDDEN_SIZE, ConfigError, RunConfig, RunStatus
from ..engine.cuda_graph import fastest_step
from ..engine.data import load_dataset, to_float
from ..engine.devices import cpu_name, cpu_threads, device_label, gemm_flops_per_second, synchronize
from ..engine.model import macs_per_sample, training_flops
from ..engine.step import TrainStep
from .cpuload import ContentionMeter, contention_note
from .legs import Leg, check_legs, default_legs

ESTIMATE_CONFIRM_S = 60.0  # a map estimated longer than this asks first (CLI) or warns (dashboard)
# Per training step, beyond its matmuls at the GEMM rate: ~30 eager ops of ~5-8 us (NOTES.md), and ~5 more
# per extra hidden layer. Calibrated on full MNIST, 2-core Xeon, 2026-12-03 (see estimate_seconds).
STEP_OVERHEAD_S = 0.15e-3
LAYER_OVERHEAD_S = 0.04e-3
SAMPLE_OVERHEAD_S = 0.4e-6  # per sample in a step: gathering its 784 floats, the softmax and loss rows
INIT_S_PER_PARAMETER = 10e-9  # a fresh model per cell and leg: seeded uniform init on the CPU
MAP_LR = 0.01  # small enough that wide, deep nets stay finite: NaN/denormal arithmetic would skew CPU timings
GEMM_SECONDS = 0.5  # per leg, to measure its fp32 matmul rate


@dataclass(frozen=True)
class MapGrid:
    hidden_sizes: tuple[int, ...] = (32, 128, 512, 1024)
    layers: tuple[int, ...] = (1, 3)  # hidden layers, each of the cell's hidden size
    batch_sizes: tuple[int, ...] = (64, 256, 1024)
    steps: int = 30  # timed training steps per cell and leg
    warmup_steps: int = 5  # untimed steps before them

    def __post_init__(self) -> None:
        for name, low, high in (("hidden_sizes", 1, MAX_HIDDEN_SIZE), ("layers", 1, MAX_HIDDEN_LAYERS),
                                ("batch_sizes", 1, MAX_BATCH_SIZE)):
            values = getattr(self, name)
            values = (values,) if isinstance(values, int) else tuple(values)
            if not values:
                raise ConfigError(f"{name}: give at least one value")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                    raise ConfigError(f"{name}: each value must be a whole number from {low} to {high}; got {v!r}")
            object.__setattr__(self, name, tuple(sorted(set(values))))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 10000:
            raise ConfigError(f"steps: must be from 1 to 10000; got {self.steps!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or \
                not 1 <= self.warmup_steps <= 1000:
            raise ConfigError(f"warmup_steps: must be from 1 to 1000; got {self.warmup_steps!r}")

    def cells(self) -> list[tuple[int, int, int]]:
        """(layers, hidden size, batch size) in the order they are measured."""
        return [(layers, hidden, batch) for layers in self.layers for hidden in self.hidden_sizes
                for batch in self.batch_sizes]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "MapGrid":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def default_map_legs(devices=None) -> list[Leg]:
    """GPU over CPU (all threads) when there is a GPU; else all CPU threads over one."""
    return default_legs(False, devices)


def step_flops(input_size: int, hidden_sizes: tuple[int, ...], num_classes: int, batch: int) -> float:
    """Matmul FLOPs of one training step on a batch (core.engine.model.training_flops)."""
    return training_flops(input_size, hidden_sizes, num_classes, batch)


def estimate_seconds(grid: MapGrid, gemm_rates: list[float | None], input_size: int, num_classes: int,
                     gemm_seconds: float = GEMM_SECONDS) -> float:
    """Seconds a map will take: per cell and leg, (warm-up + timed steps) x (matmul FLOPs / the leg's GEMM rate
    in FLOP/s + per-step op overhead), plus building each fresh model and measuring each leg's rate. A leg with
    no known rate (a GPU not measured yet) counts its overhead only: it is far faster than the CPU legs.

    Checked on full MNIST, 2-core Xeon, 2026-12-03: per cell within about -30 %..+35 % of the measured step
    times of the default grid (FLOP-bound cells overestimated a little), the whole default map 16 s estimated
    vs 14.4 s measured."""
    total = gemm_seconds * len(gemm_rates)
    for layers, hidden, batch in grid.cells():
        sizes = (hidden,) * layers
        flops = step_flops(input_size, sizes, num_classes, batch)
        parameters = macs_per_sample(input_size, sizes, num_classes)  # weights; biases are noise
        for rate in gemm_rates:
            step = (flops / rate if rate else 0.0) + STEP_OVERHEAD_S + LAYER_OVERHEAD_S * (layers - 1) + \
                SAMPLE_OVERHEAD_S * batch
            total += (grid.warmup_steps + grid.steps) * step + parameters * INIT_S_PER_PARAMETER
    return total


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_sentence(grid: MapGrid, legs: list[Leg], seconds: float) -> str:
    cells = len(grid.cells())
    return (f"about {duration_text(seconds)} for {cells} cell{'s' if cells != 1 else ''} x {len(legs)} "
            f"leg{'s' if len(legs) != 1 else ''} ({grid.warmup_steps} + {grid.steps} steps each; estimated from the "
            f"cells' FLOPs at each leg's measured matmul rate, so expect some error)")


def measure_gemm_rates(legs: list[Leg], seconds: float = GEMM_SECONDS) -> list[float]:
    """Each leg's fp32 matmul rate in FLOP/s, on its device with its thread count."""
    rates = []
    for leg in legs:
        with cpu_threads(leg.threads, leg.device):
            rates.append(gemm_flops_per_second(torch.device(leg.device), seconds=seconds))
    return rates


def check_map_legs(legs: list[Leg]) -> None:
    """Fail before measuring anything: no legs, a leg with the tutorial's pipeline (the map times resident steps),
    a missing device or a repeated leg."""
    if not legs:
        raise ConfigError("a speedup map needs at least one leg")
    for leg in legs:
        if leg.pipeline != "resident":
            raise ConfigError(f"leg {leg.spec()}: the speedup map times resident steps; drop pipeline=dataloader")
    check_legs(legs)


class _Cancelled(Exception):
    pass


def time_steps(leg: Leg, config: RunConfig, x: torch.Tensor, y: torch.Tensor, num_classes: int, grid: MapGrid,
               cancel: threading.Event) -> float:
    """Seconds for grid.steps training steps of a fresh model on the leg's device (after warm-up)."""
    device = x.device
    step = fastest_step(TrainStep(config, x.shape[1], num_classes, device), config, device)  # as the Trainer runs it
    batch, total, n = config.batch_size, grid.warmup_steps + grid.steps, len(y)
    # Step i takes the window at (i * batch) mod n of a shuffled order tiled past its end: every
    # batch is a real, shuffled one, and memory stays O(n + batch) however many steps are timed.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    order = perm.repeat(-(-(n + batch) // n)).to(device)

    def batch_at(i):
        idx = order[(i * batch) % n:(i * batch) % n + batch]
        return x.index_select(0, idx), y.index_select(0, idx)

    for i in range(grid.warmup_steps):
        step(*batch_at(i))
    synchronize(device)  # the clock starts with nothing queued
    start = time.perf_counter()
    for i in range(grid.warmup_steps, total):
        if cancel.is_set():
            raise _Cancelled
        step(*batch_at(i))
    synchronize(device)  # and stops when the GPU has finished, not when the CPU has queued
    return time.perf_counter() - start


def run_speedup_map(grid: MapGrid, legs: list[Leg], dataset, *, cancel: threading.Event | None = None,
                    on_cell=None, on_leg=None, seed: int = 42, map_id: str = "",
                    gemm_seconds: float = GEMM_SECONDS, gemm_rates: list[float] | None = None) -> dict:
    """Measure every cell on every leg; returns the map as a JSON-ready dict (status 'cancelled' if cut short).
    `gemm_rates` (FLOP/s per leg, e.g. from measure_gemm_rates for the estimate) skips measuring them again."""
    check_map_legs(legs)
    cancel = cancel or threading.Event()
    started = time.time()
    clock = time.perf_counter()
    meter = ContentionMeter()
    images = to_float(dataset.train_images)
    data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    leg_info = []
    rates = gemm_rates or measure_gemm_rates(legs, gemm_seconds)
    for leg, rate in zip(legs, rates):
        device = torch.device(leg.device)
        if leg.device not in data:
            data[leg.device] = (images.to(device), dataset.train_labels.to(device))
        info = {"spec": leg.spec(), "label": leg.label(), "device": device_label(device), "threads": leg.threads,
                "gemm_gflops": rate / 1e9}
        leg_info.append(info)
        if on_leg is not None:
            on_leg(info)
    cells, status = [], RunStatus.FINISHED
    for layers, hidden, batch in grid.cells():
        config = RunConfig(hidden_sizes=(hidden,) * layers, batch_size=batch, lr=MAP_LR, seed=seed)
        flops = step_flops(dataset.input_size, config.hidden_sizes, dataset.num_classes, batch)
        timings = []
        try:
            for leg, info in zip(legs, leg_info):
                x, y = data[leg.device]
                with cpu_threads(leg.threads, leg.device):
                    seconds = time_steps(leg, leg.config(config), x, y, dataset.num_classes, grid, cancel)
                floor = flops * grid.steps / (info["gemm_gflops"] * 1e9)
                timings.append({"seconds": seconds, "step_ms": seconds / grid.steps * 1e3,
                                "samples_per_s": grid.steps * batch / seconds, "floor_s": floor,
                                "floor_ratio": seconds / floor})
        except _Cancelled:
            status = RunStatus.CANCELLED
            break
        cell = {"layers": layers, "hidden": hidden, "batch": batch, "gflop_per_step": flops / 1e9, "legs": timings,
                "speedup": [timings[0]["seconds"] / t["seconds"] for t in timings]}
        cells.append(cell)
        if on_cell is not None:
            on_cell(cell, len(cells), len(grid.cells()))
        if cancel.is_set():
            status = RunStatus.CANCELLED
            break
    seconds = time.perf_counter() - clock
    return {"type": "speedup_map", "id": map_id, "created_at": started, "status": status, "seconds": seconds,
            "other_cpu_share": meter.share(),  # share of all cores that other processes kept busy meanwhile
            "grid": grid.to_dict(), "legs": leg_info, "cells": cells,
            "total_cells": len(grid.cells()), "data": dataset.title, "data_source": dataset.source,
            "cpu": cpu_name(), "torch": torch.__version__}


def map_job(link, data_dir=None, map_id: str = "", grid: dict | None = None, legs: tuple[str, ...] = (),
            seed: int = 42) -> dict:
    """A map measured in a training worker (a core.runs.worker job, started by core.studies.map_jobs): progress
    goes out as ("map_leg", info) and ("map_cell", cell, done, total) on `link`, which is also its cancel token
    (Stop); returns the whole map, as the CLI prints it."""
    dataset = load_dataset("mnist", data_dir)
    return run_speedup_map(MapGrid.from_dict(grid or {}), [Leg.parse(spec) for spec in legs], dataset, cancel=link,
                           seed=seed, map_id=map_id, on_leg=lambda info: link.send("map_leg", info),
                           on_cell=lambda cell, done, total: link.send("map_cell", cell, done, total))


def contention(result: dict) -> str:
    """One sentence when other processes distorted the map's timings, else ''."""
    return contention_note(result.get("other_cpu_share"), "this map")


def map_title(result: dict) -> str:
    legs = " vs ".join(leg["label"] for leg in result["legs"])
    done = f"{len(result['cells'])}/{result['total_cells']} cells" if result["status"] != RunStatus.FINISHED else \
        f"{len(result['cells'])} cells"
    return f"{legs}: {done}, {result['grid']['steps']} steps"
