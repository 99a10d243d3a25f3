"""Speedup maps for the dashboard: a live registry of map jobs, each measured in a training worker.

`MapJobs` runs a map through the RunManager like a run: it takes a place in the same device queues (the
CPU, and each GPU its legs use), so it waits for the runs asked for before it and runs asked for after it
wait for the map (they would share the machine and skew every cell); then a worker process (its own GIL
and thread setting) measures it as a job (core.studies.speedup_map.map_job) and reports each leg and cell
over the worker's socket; Cancel is the worker's Stop. At most one map measures at a time. For the page's
time estimate, each leg's GEMM rate is remembered from this server's maps, read from stored ones, or measured.
"""
from __future__ import annotations

import atexit
import math
import os
import threading
import time
from dataclasses import dataclass

from ..config import RunStatus, StoreError
from ..engine.data import CLASS_NAMES, IMAGE_SHAPES
from ..engine.devices import cpu_name
from ..runs.live import Entry, LiveRegistry
from ..runs.reports import SPEEDUP_MAP, recent_reports, stored_report
from .legs import Leg
from .speedup_map import MapGrid, check_map_legs, estimate_seconds, map_title, measure_gemm_rates

MAP_JOB = "core.studies.speedup_map:map_job"  # what the worker runs
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
    """What drives one map besides its snapshot: its place in the device queues, its worker, and Cancel."""

    def __init__(self, registry: LiveRegistry, map_id: str, manager, turn, save):
        super().__init__(registry, map_id)
        self.manager, self.turn, self.save = manager, turn, save
        self.cancelled = threading.Event()
        self.worker = None

    def cancel(self) -> None:
        self.cancelled.set()
        worker = self.worker
        if worker is not None:
            worker.stop()  # the map stops within a step and keeps its finished cells

    def run(self) -> None:
        snap = self.snapshot
        try:
            outcome = self.manager.run_job(
                self.turn, MAP_JOB, {"map_id": snap.map_id, "grid": snap.grid.to_dict(),
                                     "legs": [leg.spec() for leg in snap.legs]},
                self._on_message, self.cancelled, on_wait=self._waiting, on_start=self._started)
            if outcome == RunStatus.STOPPED:
                self.update(status=RunStatus.CANCELLED, message="cancelled before it started")
            elif self.snapshot.active:  # its worker died, or never answered
                self.update(status=RunStatus.CANCELLED if self.cancelled.is_set() else RunStatus.FAILED,
                            message="cancelled" if self.cancelled.is_set() else f"the map failed: {outcome}")
        except Exception as exc:
            self.update(status=RunStatus.FAILED, message=f"{type(exc).__name__}: {exc}")

    def _waiting(self, ahead: int) -> None:
        message = (f"waiting for the {ahead} run{'s' if ahead != 1 else ''} ahead of it on the device to finish"
                   if ahead else "waiting for the device")
        if self.snapshot.message != message:  # other runs would share the machine and skew every cell
            self.update(message=message)

    def _started(self, worker) -> None:
        self.worker = worker
        self.update(status=RunStatus.RUNNING, message="measuring the devices' matmul rates")
        if self.cancelled.is_set():  # Cancel pressed while the worker was taken
            worker.stop()

    def _on_message(self, kind: str, *body) -> None:
        if kind == "map_leg":
            info = body[0]
            self.update(message=f"leg {info['label']} ({info['device']}): GEMM {info['gemm_gflops']:.1f} GFLOP/s")
        elif kind == "map_cell":
            cell, done, total = body
            self.update(cells=self.snapshot.cells + (cell,), message=f"{done} of {total} cells")
        elif kind == "job_done":
            result = body[0]
            status = result["status"]
            message = f"cancelled after {len(result['cells'])} of {result['total_cells']} cells" \
                if status == RunStatus.CANCELLED else f"finished in {result['seconds']:.0f} s"
            problem = self.save(result)  # stored before it is shown as ended: whoever sees it ended can reload it
            self.update(status=status, result=result, cells=tuple(result["cells"]), leg_info=tuple(result["legs"]),
                        message=f"{message}; {problem}" if problem else message)
        elif kind == "error":
            self.update(status=RunStatus.CANCELLED if self.cancelled.is_set() else RunStatus.FAILED,
                        message="cancelled" if self.cancelled.is_set() else f"the map failed: {body[0]}")


class MapJobs:
    """Speedup maps for a long-lived UI process: at most one measures at a time."""

    def __init__(self, manager):
        self.manager = manager
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
        stored = (stored_report(self.manager.store, entry["id"], SPEEDUP_MAP) for entry in self.recent(5))
        results += [result for result in stored if result is not None]
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

    def start(self, grid: MapGrid, legs: list[Leg]) -> str:
        if self.active():
            raise RuntimeError("a speedup map is already being measured; cancel it or wait for it")
        check_map_legs(legs)
        map_id = "m" + os.urandom(5).hex()
        # The CPU always (the GPU legs' steps are launched from it, and it measures the CPU legs), and each GPU
        # its legs use: runs asked for earlier train first, runs asked for later wait for the map.
        turn = self.manager.queue_job({"cpu"} | {leg.device for leg in legs})
        job = MapJob(self._live, map_id, self.manager, turn, self._save)
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
        result = stored_report(self.manager.store, map_id, SPEEDUP_MAP)
        if result is None:
            return None
        legs = tuple(Leg.parse(leg["spec"]) for leg in result["legs"])
        return MapSnapshot(map_id, result["status"], MapGrid.from_dict(result["grid"]), legs,
                           tuple(result["cells"]), tuple(result["legs"]), "loaded from the run database", result,
                           result["created_at"])

    def recent(self, limit: int = 20) -> list[dict]:
        return recent_reports(self.manager.store, SPEEDUP_MAP, limit)

    def shutdown(self, timeout: float = 5.0) -> None:
        for job in self._live.entries():
            job.cancel()
        self._live.join_all(timeout)

    def _save(self, result: dict) -> str:
        """Keep a map that has cells in the run database; '' or why it was not kept."""
        if self.manager.store is None or not result["cells"]:
            return ""
        try:
            self.manager.store.save_report(SPEEDUP_MAP, result, map_title(result), result["id"])
        except StoreError as exc:
            return f"it was not saved: {exc}"
        return ""
