"""Background training runs for a long-lived UI process: start, watch, stop, continue, shut down.

Each run trains in its own worker thread and publishes immutable snapshots behind a lock; a UI
polls `snapshot(run_id)` and never touches the trainer. Runs on one device type wait their turn
(CPU cores are shared, so by default one CPU run trains at a time and later ones queue).
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import traceback
from dataclasses import dataclass, field, replace

from .config import Phase, RunConfig
from .data import DataError, load_dataset
from .devices import DeviceError, resolve_device, set_cpu_threads
from .model import LayerRow
from .runs import TrainingRun
from .store import Store, StoreError
from .train import FAILED, FINISHED, INTERRUPTED, STOPPED, BatchProgress, EpochResult, TrainingError

QUEUED, LOADING, RUNNING = "queued", "loading", "running"
ACTIVE = (QUEUED, LOADING, RUNNING)


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    owner: str
    config: RunConfig
    status: str  # queued, loading, running, finished, stopped, diverged, failed, interrupted
    message: str = ""
    epochs: tuple[EpochResult, ...] = ()
    progress: BatchProgress | None = None
    planned_epochs: int = 0  # epochs this run will have when its current phase ends
    schedule: tuple[Phase, ...] = ()
    device: str = ""
    layers: tuple[LayerRow, ...] = ()
    parameters: int = 0
    n_train: int = 0
    n_val: int = 0
    data_title: str = ""
    data_note: str = ""
    test_acc: float | None = None
    store_warning: str = ""
    started_at: float = field(default_factory=time.time)
    live: bool = True  # False when read back from the store (no trainer in memory)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def can_continue(self) -> bool:
        return self.live and self.status in (FINISHED, STOPPED) and bool(self.epochs)


class _LiveRun:
    def __init__(self, snapshot: RunSnapshot):
        self.lock = threading.Lock()
        self.snapshot = snapshot
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None
        self.run: TrainingRun | None = None

    def update(self, **changes) -> None:
        with self.lock:
            self.snapshot = replace(self.snapshot, **changes)


class RunManager:
    def __init__(self, db_path=None, data_dir=None, cpu_threads: int | None = None, max_cpu_runs: int = 1):
        self.data_dir = data_dir
        self.store_warning = ""
        try:
            self.store: Store | None = Store(db_path)
        except StoreError as exc:
            self.store = None
            self.store_warning = f"{exc} Training still works; run history is off."
        # Thread count is process-wide: set once here, not per run.
        self.cpu_threads = cpu_threads or int(os.environ.get("TRAIN_THREADS", 0)) or torch_default_threads()
        set_cpu_threads(self.cpu_threads)
        self._runs: dict[str, _LiveRun] = {}
        self._lock = threading.Lock()
        self._slots = {"cpu": threading.Semaphore(max_cpu_runs), "cuda": threading.Semaphore(1),
                       "mps": threading.Semaphore(1)}
        self._closed = False
        atexit.register(self.shutdown)

    # -- commands ---------------------------------------------------------------------------------
    def start(self, config: RunConfig, owner: str = "", phases: tuple[Phase, ...] | None = None) -> str:
        """Queue a run; returns its id at once. Problems found later (data, memory) end it as "failed"."""
        if self._closed:
            raise RuntimeError("the run manager is shut down")
        phases = tuple(phases or (Phase(config.epochs, config.lr),))
        config = config.replace(epochs=phases[0].epochs, lr=phases[0].lr)
        run_id = os.urandom(6).hex()
        live = _LiveRun(RunSnapshot(run_id, owner, config, QUEUED, planned_epochs=sum(p.epochs for p in phases),
                                    store_warning=self.store_warning))
        with self._lock:
            self._runs[run_id] = live
        live.thread = threading.Thread(target=self._work, args=(live, phases), name=f"train-{run_id}", daemon=True)
        live.thread.start()
        return run_id

    def continue_run(self, run_id: str, epochs: int, lr: float) -> None:
        live = self._live(run_id)
        snap = live.snapshot
        if not snap.can_continue or (live.thread and live.thread.is_alive()):
            raise RuntimeError(f"run {run_id} cannot be continued now (status {snap.status})")
        phase = Phase(epochs, lr)
        live.cancel.clear()
        live.update(status=QUEUED, message="", planned_epochs=len(snap.epochs) + epochs, progress=None)
        live.thread = threading.Thread(target=self._work, args=(live, (phase,)), name=f"train-{run_id}", daemon=True)
        live.thread.start()

    def stop(self, run_id: str) -> None:
        live = self._runs.get(run_id)
        if live is not None:
            live.cancel.set()

    def snapshot(self, run_id: str) -> RunSnapshot | None:
        live = self._runs.get(run_id)
        if live is not None:
            with live.lock:
                return live.snapshot
        return self._stored_snapshot(run_id)

    def active_runs(self) -> list[RunSnapshot]:
        with self._lock:
            runs = list(self._runs.values())
        return [r.snapshot for r in runs if r.snapshot.active]

    def wait(self, run_id: str, timeout: float | None = None) -> RunSnapshot | None:
        live = self._runs.get(run_id)
        if live is not None and live.thread is not None:
            live.thread.join(timeout)
        return self.snapshot(run_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every run between batches, join the workers, and record cut-off runs as interrupted."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            runs = list(self._runs.values())
        for live in runs:
            live.cancel.set()
        deadline = time.monotonic() + timeout
        for live in runs:
            if live.thread is not None:
                live.thread.join(max(0.0, deadline - time.monotonic()))

    # -- worker -----------------------------------------------------------------------------------
    def _work(self, live: _LiveRun, phases: tuple[Phase, ...]) -> None:
        snap = live.snapshot
        try:
            kind = resolve_device(snap.config.device).type
        except DeviceError as exc:
            live.update(status=FAILED, message=str(exc))
            return
        slot = self._slots[kind]
        while not slot.acquire(timeout=0.2):  # queued: wait for the device, but honour Stop
            if live.cancel.is_set():
                live.update(status=STOPPED, message="stopped while waiting in the queue")
                return
        try:
            if live.run is None:
                live.update(status=LOADING)
                live.run = self._create(live)
                if live.run is None:
                    return
            self._train(live, phases)
        except Exception as exc:  # never let a worker die silently: the UI shows the message
            message = str(exc) if isinstance(exc, (TrainingError, DataError, DeviceError)) else \
                f"unexpected error: {type(exc).__name__}: {exc}"
            if not isinstance(exc, (TrainingError, DataError, DeviceError)):
                traceback.print_exc()
            live.update(status=FAILED, message=message)
        finally:
            slot.release()

    def _create(self, live: _LiveRun) -> TrainingRun | None:
        snap = live.snapshot
        try:
            dataset = load_dataset(snap.config.dataset, self.data_dir)
            run = TrainingRun(snap.config, store=self.store, dataset=dataset, cancel=live.cancel,
                              origin="dashboard", run_id=snap.run_id)
        except (DataError, DeviceError, TrainingError) as exc:
            live.update(status=FAILED, message=str(exc))
            return None
        trainer = run.trainer
        live.update(device=trainer.device_label, layers=tuple(trainer.summary), parameters=trainer.parameter_count,
                    n_train=trainer.n_train, n_val=trainer.n_val, data_title=dataset.title, data_note=dataset.note)
        return run

    def _train(self, live: _LiveRun, phases: tuple[Phase, ...]) -> None:
        run = live.run
        for i, phase in enumerate(phases):
            live.update(status=RUNNING, schedule=live.snapshot.schedule + (phase,),
                        planned_epochs=len(live.snapshot.epochs) + sum(p.epochs for p in phases[i:]))
            run.train_phase(phase.epochs, phase.lr,
                            on_epoch=lambda e: live.update(epochs=live.snapshot.epochs + (e,)),
                            on_progress=lambda p: live.update(progress=p))
            if run.status != FINISHED:
                break
        status, message = run.status, run.message
        if self._closed and status == STOPPED:
            status, message = INTERRUPTED, "the server shut down during the run"
            run.mark_interrupted(message)
        live.update(status=status, message=message, test_acc=run.test_acc, store_warning=run.store_warning,
                    planned_epochs=len(live.snapshot.epochs), progress=None)

    # -- helpers ----------------------------------------------------------------------------------
    def _live(self, run_id: str) -> _LiveRun:
        live = self._runs.get(run_id)
        if live is None:
            raise KeyError(run_id)
        return live

    def _stored_snapshot(self, run_id: str) -> RunSnapshot | None:
        if self.store is None:
            return None
        try:
            row = self.store.get_run(run_id)
            epochs = tuple(EpochResult(**e, device=row["device"]) for e in self.store.epochs(run_id))
        except (KeyError, StoreError):
            return None
        config = RunConfig.from_dict(row["config"])
        return RunSnapshot(run_id, "", config, row["status"], row["message"], epochs,
                           planned_epochs=len(epochs), schedule=tuple(Phase(e, lr) for e, lr in row["schedule"]),
                           device=row["device"], parameters=row["parameters"] or 0, test_acc=row["test_acc"],
                           started_at=row["created_at"], live=False)


def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()
