"""Speedup maps for the dashboard: a live registry of map jobs, each measured in a subprocess.

`MapJobs` runs a map in a `python -m core speedup-map` subprocess (its own GIL and thread setting), reads
its progress lines, and cancels it with SIGTERM. A map waits while runs train (or a worker starts): they
would share the machine and skew every cell. At most one map measures at a time. For the page's time
estimate, each leg's GEMM rate is remembered from this server's maps, read from stored ones, or measured.
"""
from __future__ import annotations

import atexit
import collections
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ..config import PROJECT_ROOT, RunStatus, StoreError
from ..engine.data import CLASS_NAMES, IMAGE_SHAPES
from ..engine.devices import cpu_name
from ..runs.live import Entry, LiveRegistry
from ..runs.reports import SPEEDUP_MAP, open_reports, recent_reports
from .legs import Leg
from .speedup_map import MapGrid, check_map_legs, estimate_seconds, measure_gemm_rates

_MEASURE_LOCK = threading.Lock()  # torch's thread count is process-wide: one measurement at a time


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


class MapJob(Entry):
    """What drives one map besides its snapshot: its subprocess, and Cancel."""

    def __init__(self, registry: LiveRegistry, map_id: str, data_dir, db_path, busy=None):
        super().__init__(registry, map_id)
        self.data_dir, self.db_path = data_dir, db_path
        self.busy = busy or (lambda: 0)
        self.cancelled = threading.Event()
        self.process: subprocess.Popen | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=15)

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

    def run(self) -> None:
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
        self._live: LiveRegistry[MapSnapshot, MapJob] = LiveRegistry()
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
        results = [job.snapshot.result for job in self._live.entries() if job.snapshot.result]
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
        check_map_legs(legs)
        map_id = "m" + os.urandom(5).hex()
        db = self.reports.path if self.reports is not None else None
        job = MapJob(self._live, map_id, self.manager.data_dir, db,
                     busy or (lambda: len(self.manager.active_runs()) + self.manager.worker_starting()))
        self._live.add(job, MapSnapshot(map_id, RunStatus.WAITING, grid, tuple(legs), started_at=time.time()))
        self._live.drive(map_id, job.run, name=f"map-{map_id}")
        return map_id

    def cancel(self, map_id: str) -> None:
        job = self._live.entry(map_id)
        if job is not None:
            job.cancel()

    def wait(self, map_id: str, timeout: float | None = None) -> MapSnapshot | None:
        self._live.wait(map_id, timeout)
        return self.snapshot(map_id)

    def snapshot(self, map_id: str) -> MapSnapshot | None:
        snap = self._live.get(map_id)
        return snap if snap is not None else self.stored(map_id)

    def active(self) -> list[MapSnapshot]:
        return self._live.active()

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
        jobs = self._live.entries()
        for job in jobs:
            job.cancel()
        self._live.join_all(timeout)
        for job in jobs:
            if job.process is not None and job.process.poll() is None:
                job.process.kill()
