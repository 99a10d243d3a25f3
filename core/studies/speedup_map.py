"""Speedup map: where the GPU (or more CPU threads) pays off, over model width, depth and batch size.

For every cell of a grid (hidden size x hidden layers x batch size) and every leg, a fresh model
takes `warmup_steps` untimed training steps (allocation, BLAS/cuBLAS initialisation, CUDA-graph
capture), then `steps` timed ones between two device synchronisations. A step is the Trainer's
resident step: a gather from the real training images already on the device, the hand-written
forward and backward (backprop.MLPStep), the optimizer update, and on CUDA the captured graph.

Each cell reports every leg's seconds and samples/s, the speedup of each leg over the first, and
the FLOP-floor ratio: measured time / (the step's matmul FLOPs / the leg's measured GEMM rate).
A ratio near 1 means the leg runs at its hardware's matmul speed; a large one, that per-op overhead
dominates (small models) and more hardware cannot help.

Cells run one after another, every leg within a cell, so a cancelled map keeps complete cells.

Before it starts, a map's duration is estimated from its FLOPs (core.engine.model.macs_per_sample) at each
leg's measured GEMM rate, plus a per-step overhead for the eager ops: the CLI prints it, and above
a minute asks (on a terminal) or wants --yes (otherwise); the dashboard shows it and warns.
`MapJobs` runs maps for the dashboard in a `python -m core speedup-map` subprocess (its own GIL
and thread setting), reads its progress lines, and cancels it with SIGTERM.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import torch

from ..engine.backprop import MLPStep
from .compare import Leg, check_legs, default_legs, spare_starting
from ..config import (PROJECT_ROOT, MAX_BATCH_SIZE, MAX_HIDDEN_LAYERS, MAX_HIDDEN_SIZE, ConfigError, RunConfig,
                      RunStatus, StoreError)
from .cpuload import ContentionMeter, contention_note
from ..engine.cuda_graph import GraphedStep, graph_support
from ..engine.data import CLASS_NAMES, IMAGE_SHAPES, to_float
from ..engine.devices import cpu_name, cpu_threads, device_label, gemm_flops_per_second, synchronize
from ..engine.model import build_mlp, macs_per_sample
from ..engine.optim import make_optimizer
from ..runs.reports import SPEEDUP_MAP, open_reports, recent_reports

ESTIMATE_CONFIRM_S = 60.0  # a map estimated longer than this asks first (CLI) or warns (dashboard)
# Per training step, beyond its matmuls at the GEMM rate: ~30 eager ops of ~5-8 us (NOTES.md), and ~5 more
# per extra hidden layer. Calibrated on full MNIST, 2-core Xeon, 2026-12-03 (see estimate_seconds).
STEP_OVERHEAD_S = 0.15e-3
LAYER_OVERHEAD_S = 0.04e-3
SAMPLE_OVERHEAD_S = 0.4e-6  # per sample in a step: gathering its 784 floats, the softmax and loss rows
INIT_S_PER_PARAMETER = 10e-9  # a fresh model per cell and leg: seeded uniform init on the CPU
MAP_LR = 0.01  # small enough that wide, deep nets stay finite: NaN/denormal arithmetic would skew CPU timings
GEMM_SECONDS = 0.5  # per leg, to measure its fp32 matmul rate
_MEASURE_LOCK = threading.Lock()
FINISHED, CANCELLED = RunStatus.FINISHED, RunStatus.CANCELLED  # the old names, for code that imports them from here


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
    """Matmul FLOPs of one training step: forward (2 per MAC) and backward (4 per MAC)."""
    return 6.0 * macs_per_sample(input_size, hidden_sizes, num_classes) * batch


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


class _Cancelled(Exception):
    pass


def time_steps(leg: Leg, config: RunConfig, x: torch.Tensor, y: torch.Tensor, num_classes: int, grid: MapGrid,
               cancel: threading.Event) -> float:
    """Seconds for grid.steps training steps of a fresh model on the leg's device (after warm-up)."""
    device = x.device
    model = build_mlp(config, x.shape[1], num_classes).to(device)
    model.requires_grad_(False)
    step_fn = MLPStep(model, config.activation)
    optimizer = make_optimizer(config.optimizer, step_fn.params, config.lr, config.weight_decay, config.momentum)
    graphed = graph_support(config, device.type)[0]
    graph_step = GraphedStep(step_fn, optimizer, device) if graphed else None

    def step(xb, yb):
        if graph_step is not None:
            return graph_step(xb, yb)
        loss, grads = step_fn(xb, yb)
        optimizer.step(grads)
        return loss

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
    if not legs:
        raise ConfigError("a speedup map needs at least one leg")
    for leg in legs:
        if leg.pipeline != "resident":
            raise ConfigError(f"leg {leg.spec()}: the speedup map times resident steps; drop pipeline=dataloader")
    check_legs(legs)
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


def contention(result: dict) -> str:
    """One sentence when other processes distorted the map's timings, else ''."""
    return contention_note(result.get("other_cpu_share"), "this map")


def map_title(result: dict) -> str:
    legs = " vs ".join(leg["label"] for leg in result["legs"])
    done = f"{len(result['cells'])}/{result['total_cells']} cells" if result["status"] != RunStatus.FINISHED else \
        f"{len(result['cells'])} cells"
    return f"{legs}: {done}, {result['grid']['steps']} steps"


# -- for the dashboard: a map in a subprocess -------------------------------------------------------
@dataclass(frozen=True)
class MapSnapshot:
    map_id: str
    status: str  # waiting, running, finished, cancelled, failed
    grid: MapGrid
    legs: tuple[Leg, ...]
    cells: tuple[dict, ...] = ()
    leg_info: tuple[dict, ...] = ()
    message: str = ""
    result: dict | None = None  # the whole map, once it has ended
    started_at: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.WAITING, RunStatus.RUNNING)

    @property
    def total(self) -> int:
        return len(self.grid.cells())

    def as_result(self) -> dict:
        """The map so far in the shape run_speedup_map returns (for the charts, also mid-run)."""
        if self.result is not None:
            return self.result
        return {"type": "speedup_map", "id": self.map_id, "status": self.status, "grid": self.grid.to_dict(),
                "legs": list(self.leg_info) or [{"spec": leg.spec(), "label": leg.label(), "device": leg.device,
                                                  "threads": leg.threads, "gemm_gflops": None} for leg in self.legs],
                "cells": list(self.cells), "total_cells": self.total, "created_at": self.started_at}


class MapJob:
    def __init__(self, map_id: str, grid: MapGrid, legs: list[Leg], data_dir, db_path, busy=None):
        self.lock = threading.Lock()
        self.snapshot = MapSnapshot(map_id, RunStatus.WAITING, grid, tuple(legs), started_at=time.time())
        self.data_dir, self.db_path = data_dir, db_path
        self.busy = busy or (lambda: 0)
        self.cancelled = threading.Event()
        self.process: subprocess.Popen | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=15)
        self.thread = threading.Thread(target=self._run, name=f"map-{map_id}", daemon=True)

    def update(self, **changes) -> None:
        with self.lock:
            self.snapshot = dataclasses.replace(self.snapshot, **changes)

    def command(self) -> list[str]:
        snap = self.snapshot
        grid = snap.grid
        command = [sys.executable, "-m", "core", "speedup-map", "--id", snap.map_id,
                   "--hidden-sizes", ",".join(map(str, grid.hidden_sizes)), "--layers", ",".join(map(str, grid.layers)),
                   "--batch-sizes", ",".join(map(str, grid.batch_sizes)), "--steps", str(grid.steps),
                   "--warmup-steps", str(grid.warmup_steps), "--yes"]  # the page showed the estimate first
        for leg in snap.legs:
            command += ["--leg", leg.spec()]
        if self.data_dir:
            command += ["--data-dir", str(self.data_dir)]
        command += ["--db", str(self.db_path)] if self.db_path else ["--no-db"]
        return command

    def cancel(self) -> None:
        self.cancelled.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the map stops within a step and keeps its finished cells

    def _run(self) -> None:
        try:
            while self.busy() > 0:  # other runs would share the machine and skew every cell
                self.update(message="waiting for the runs that are training (or a worker that is starting) to finish")
                if self.cancelled.wait(0.5):
                    self.update(status=RunStatus.CANCELLED, message="cancelled before it started")
                    return
            if self.cancelled.is_set():
                self.update(status=RunStatus.CANCELLED, message="cancelled before it started")
                return
            self.update(status=RunStatus.RUNNING, message="measuring the devices' matmul rates")
            self.process = subprocess.Popen(self.command(), cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            start_new_session=True)
            if self.cancelled.is_set():
                self.cancel()
            reader = threading.Thread(target=self._read_stderr, daemon=True)
            reader.start()
            for line in self.process.stdout:
                self._on_line(line)
            code = self.process.wait()
            reader.join(2)
            snap = self.snapshot
            if snap.result is None:
                tail = " | ".join(self.stderr_tail) or f"exit code {code}"
                self.update(status=RunStatus.CANCELLED if self.cancelled.is_set() else RunStatus.FAILED,
                            message="cancelled" if self.cancelled.is_set() else f"the map failed: {tail}")
        except Exception as exc:
            self.update(status=RunStatus.FAILED, message=f"{type(exc).__name__}: {exc}")

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            line = line.strip()
            if line:
                self.stderr_tail.append(line)
                if line.startswith("leg "):
                    self.update(message=line)

    def _on_line(self, line: str) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        if record.get("type") == "cell":
            cell = {k: v for k, v in record.items() if k not in ("type", "done", "total")}
            self.update(cells=self.snapshot.cells + (cell,), message=f"{record['done']} of {record['total']} cells")
        elif record.get("type") == "speedup_map":
            status = record["status"]
            message = f"cancelled after {len(record['cells'])} of {record['total_cells']} cells" \
                if status == RunStatus.CANCELLED else f"finished in {record['seconds']:.0f} s"
            self.update(status=status, result=record, cells=tuple(record["cells"]), leg_info=tuple(record["legs"]),
                        message=message)


class MapJobs:
    """Speedup maps for a long-lived UI process: at most one measures at a time."""

    def __init__(self, manager):
        self.manager = manager
        self.reports = open_reports(manager.store)
        self._jobs: dict[str, MapJob] = {}
        self._lock = threading.Lock()
        self._rates: dict[str, float] = {}  # leg spec -> fp32 GEMM FLOP/s on this machine, for estimates
        atexit.register(self.shutdown)

    def gemm_rates(self, legs: list[Leg], measure: bool = False) -> list[float | None]:
        """Each leg's matmul rate (FLOP/s) for the time estimate, None where unknown: remembered, else from this
        server's maps or the newest stored ones measured on this CPU, else (CPU legs, when `measure`) measured
        here once, 0.2 s each. The page measures only while nothing trains: it would take CPU from a timed run."""
        missing = {leg.spec() for leg in legs} - set(self._rates)
        if missing:
            self._learn_rates(missing)
        for leg in legs:
            if leg.spec() not in self._rates and measure and leg.device == "cpu":
                with _MEASURE_LOCK:  # torch's thread count is process-wide
                    self._rates[leg.spec()] = measure_gemm_rates([leg], seconds=0.2)[0]
        return [self._rates.get(leg.spec()) for leg in legs]

    def _learn_rates(self, specs: set[str]) -> None:
        with self._lock:
            results = [job.snapshot.result for job in self._jobs.values() if job.snapshot.result]
        for entry in self.recent(5):
            try:
                results.append(self.reports.get(entry["id"]))
            except (KeyError, StoreError):
                continue
        here = cpu_name()
        for result in results:  # newest of this server's first, then the stored ones, newest first
            if result.get("cpu", here) != here:
                continue
            for leg in result.get("legs", []):
                if leg.get("spec") in specs and leg.get("gemm_gflops") and leg["spec"] not in self._rates:
                    self._rates[leg["spec"]] = leg["gemm_gflops"] * 1e9

    def estimate(self, grid: MapGrid, legs: list[Leg], measure: bool = False) -> float | None:
        """Seconds the map would take on MNIST, or None while no leg's rate is known."""
        rates = self.gemm_rates(legs, measure)
        if not any(rates):
            return None
        return estimate_seconds(grid, rates, math.prod(IMAGE_SHAPES["mnist"]), len(CLASS_NAMES["mnist"]))

    def start(self, grid: MapGrid, legs: list[Leg], busy=None) -> str:
        if self.active():
            raise RuntimeError("a speedup map is already being measured; cancel it or wait for it")
        for leg in legs:
            if leg.pipeline != "resident":
                raise ConfigError(f"leg {leg.spec()}: the speedup map times resident steps")
        check_legs(legs)
        map_id = "m" + os.urandom(5).hex()
        db = self.reports.path if self.reports is not None else None
        job = MapJob(map_id, grid, legs, self.manager.data_dir, db,
                     busy or (lambda: len(self.manager.active_runs()) + spare_starting(self.manager)))
        with self._lock:
            self._jobs[map_id] = job
        job.thread.start()
        return map_id

    def cancel(self, map_id: str) -> None:
        job = self._jobs.get(map_id)
        if job is not None:
            job.cancel()

    def wait(self, map_id: str, timeout: float | None = None) -> MapSnapshot | None:
        job = self._jobs.get(map_id)
        if job is not None:
            job.thread.join(timeout)
        return self.snapshot(map_id)

    def snapshot(self, map_id: str) -> MapSnapshot | None:
        job = self._jobs.get(map_id)
        if job is not None:
            with job.lock:
                return job.snapshot
        return self.stored(map_id)

    def active(self) -> list[MapSnapshot]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [job.snapshot for job in jobs if job.snapshot.active]

    def stored(self, map_id: str) -> MapSnapshot | None:
        if self.reports is None:
            return None
        try:
            result = self.reports.get(map_id)
        except (KeyError, StoreError):
            return None
        if result.get("type") != "speedup_map":
            return None
        legs = tuple(Leg.parse(leg["spec"]) for leg in result["legs"])
        return MapSnapshot(map_id, result["status"], MapGrid.from_dict(result["grid"]), legs,
                           tuple(result["cells"]), tuple(result["legs"]), "loaded from the run database", result,
                           result["created_at"])

    def recent(self, limit: int = 20) -> list[dict]:
        return recent_reports(self.reports, SPEEDUP_MAP, limit)

    def shutdown(self, timeout: float = 5.0) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        for job in jobs:
            if job.thread.is_alive():
                job.thread.join(timeout)
            if job.process is not None and job.process.poll() is None:
                job.process.kill()
