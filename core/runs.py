"""A training run as the user sees it: a Trainer, its phases, and its record in the store.

Both the CLI and the dashboard go through TrainingRun, so a run looks the same wherever it started.
A store that fails mid-run never stops training: the run goes on and `store_warning` says why.
"""
from __future__ import annotations

import math
import statistics
import threading
import uuid
from typing import Callable, Iterable

import torch

from .config import Phase, RunConfig
from .data import ImageDataset, load_dataset
from .health import learning_warnings
from .store import Store, StoreError
from .train import (DIVERGED, FAILED, FINISHED, INTERRUPTED, STOPPED, BatchProgress, EpochResult, Trainer,
                    TrainingError)

EpochListener = Callable[[EpochResult], None]
ProgressListener = Callable[[BatchProgress], None]


class TrainingRun:
    def __init__(self, config: RunConfig, *, store: Store | None = None, data_dir=None,
                 dataset: ImageDataset | None = None, cancel: threading.Event | None = None,
                 origin: str = "cli", run_id: str | None = None, create_record: bool = True):
        self.config = config
        self.cancel = cancel or threading.Event()
        self.store = store
        self.store_warning = ""
        self.epochs: list[EpochResult] = []
        self.schedule: list[Phase] = []
        self.test_loss: float | None = None
        self.test_acc: float | None = None
        self.id = run_id or uuid.uuid4().hex[:12]
        try:
            self.dataset = dataset or load_dataset(config.dataset, data_dir)
            self.trainer = Trainer(config, self.dataset, self.cancel)
        except Exception as exc:  # no data, no device, a batch larger than the data...: still a run, so recorded
            if create_record:
                self._record_failed_start(exc, origin)
            raise
        if create_record:
            self._stored(lambda s: s.create_run(
                config.to_dict(), device=self.trainer.device_label, data_source=self.dataset.source,
                torch_version=torch.__version__, parameters=self.trainer.parameter_count, origin=origin,
                run_id=self.id))

    @classmethod
    def resume(cls, run_id: str, store: Store, *, data_dir=None, cancel: threading.Event | None = None,
               device: str | None = None) -> "TrainingRun":
        """Reload a stored run from its checkpoint (weights, optimizer, batch order) to train it further."""
        row = store.get_run(run_id)
        blob = store.load_checkpoint(run_id)
        if blob is None:
            raise TrainingError(f"run {run_id} kept no weights (it ended before its first epoch), so it cannot "
                                f"be continued; re-run its settings instead")
        config = RunConfig.from_dict(row["config"])
        if device is not None:
            config = config.replace(device=device)
        run = cls(config, store=store, data_dir=data_dir, cancel=cancel, run_id=run_id, create_record=False)
        if row["data_source"] and row["data_source"] != run.dataset.source:
            raise TrainingError(f"run {run_id} was trained on {row['dataset']} ({row['data_source']}), but "
                                f"{run.dataset.title} is what is available now; continuing would change its data")
        run.trainer.restore(blob)
        run.epochs = [EpochResult(**e, device=row["device"]) for e in store.epochs(run_id)]
        run.schedule = [Phase(e, lr) for e, lr in row["schedule"]]
        run.test_loss, run.test_acc = row["test_loss"], row["test_acc"]
        run.trainer.status = row["status"]
        return run

    def _record_failed_start(self, exc: Exception, origin: str) -> None:
        def record(store: Store) -> None:
            store.create_run(self.config.to_dict(), device=self.config.device, data_source="",
                             torch_version=torch.__version__, parameters=None, origin=origin, run_id=self.id)
            store.finish_run(self.id, FAILED, str(exc).strip() or type(exc).__name__)

        self._stored(record)

    @property
    def status(self) -> str:
        return self.trainer.status

    @property
    def message(self) -> str:
        return self.trainer.stop_reason

    def _stored(self, action):
        if self.store is None:
            return None
        try:
            return action(self.store)
        except StoreError as exc:
            self.store_warning = f"{exc}; this run is no longer being saved"
            self.store = None
            return None

    def train_phase(self, epochs: int | None = None, lr: float | None = None,
                    on_epoch: EpochListener | None = None, on_progress: ProgressListener | None = None) -> str:
        """Train one phase (continuing the epoch count); returns the run's status afterwards."""
        phase = Phase(self.config.epochs if epochs is None else epochs, self.config.lr if lr is None else lr)
        self.schedule.append(phase)
        self._stored(lambda s: s.add_phase(self.id, phase.epochs, phase.lr))
        try:
            for result in self.trainer.train(phase.epochs, phase.lr, on_progress):
                self.epochs.append(result)
                self._stored(lambda s: s.add_epoch(self.id, result.to_dict()))
                if on_epoch is not None:
                    on_epoch(result)
        except BaseException as exc:
            status = INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FAILED
            self.trainer.status = status
            self._stored(lambda s: s.finish_run(self.id, status, _one_line(exc)))
            raise
        self._finish_phase()
        return self.status

    def run_schedule(self, phases: Iterable[Phase], on_epoch: EpochListener | None = None,
                     on_progress: ProgressListener | None = None) -> str:
        for phase in phases:
            if self.train_phase(phase.epochs, phase.lr, on_epoch, on_progress) != FINISHED:
                break
        return self.status

    def _finish_phase(self) -> None:
        if self.status in (FINISHED, STOPPED) and self.epochs:
            self.test_loss, self.test_acc = self.trainer.evaluate_test()
            self._stored(lambda s: s.save_checkpoint(self.id, self.trainer.checkpoint()))
        message = self.message if self.status in (STOPPED, DIVERGED) else ""
        self._stored(lambda s: s.finish_run(self.id, self.status, message, self.test_loss, self.test_acc))

    def mark_interrupted(self, reason: str = "the server shut down during the run") -> None:
        self.trainer.status = INTERRUPTED
        self._stored(lambda s: s.finish_run(self.id, INTERRUPTED, reason))

    def summary(self) -> dict:
        timed = [e.seconds for e in self.epochs if not e.warmup] or [e.seconds for e in self.epochs]
        return {
            "run_id": self.id,
            "status": self.status,
            "message": self.message,
            "epochs": len(self.epochs),
            "val_acc": self.epochs[-1].val_acc if self.epochs else None,
            "best_val_acc": max((e.val_acc for e in self.epochs), default=None),
            "test_acc": self.test_acc,
            "test_loss": self.test_loss,
            "total_seconds": sum(e.seconds for e in self.epochs),
            "median_epoch_seconds": _median(timed),
            "device": self.trainer.device_label,
            "data_source": self.dataset.source,
            "data_note": self.dataset.note,
            "store_warning": self.store_warning,
            "warnings": self.warnings(),
        }

    def warnings(self) -> list[str]:
        """Not learning, or validation loss rising: what was seen and what to change (the run is kept)."""
        steps = math.ceil(self.trainer.n_train / self.config.batch_size)
        return learning_warnings(self.epochs, self.dataset.num_classes, steps_per_epoch=steps)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
