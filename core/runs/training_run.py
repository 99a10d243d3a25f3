"""A training run as the user sees it: a Trainer, its phases, and its record in the store.

Both the CLI and the dashboard go through TrainingRun, so a run looks the same wherever it started.
A store that fails mid-run never stops training: the run goes on and `store_warning` says what is not
saved and how to fix it. Every later write first retries what failed (the record, phases, epochs), so
a store that works again (space freed, folder writable) catches up without a restart, and a database
file emptied or deleted under the run gets the whole run again.

Writes go small to large: the epoch rows, then the status and result, then the weights blob, so a
failed blob write loses only the blob. Weights are saved after an epoch when that keeps saving under
WEIGHTS_TIME_SHARE of the wall time (every epoch once an epoch takes ten times as long as a save), so
a run whose process is killed can be continued from its last saved epoch (resume drops the epochs
recorded after it); an interrupted run (server gone, SIGTERM) saves its last finished epoch's weights.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from typing import Callable, Iterable

import torch

from ..config import Phase, RunConfig, RunStatus, StoreEmptied, StoreError, TrainingError
from ..engine.data import ImageDataset, load_dataset
from ..engine.health import learning_warnings
from .store import Store
from .telemetry import TelemetrySample, TelemetrySampler, TelemetrySummary
from ..engine.train import BatchProgress, EpochResult, Trainer, median_timed_epoch

EpochListener = Callable[[EpochResult], None]
ProgressListener = Callable[[BatchProgress], None]
TelemetryListener = Callable[[TelemetrySample], None]
WEIGHTS_TIME_SHARE = 0.1  # at most this share of the wall time goes to saving weights between phase ends


class TrainingRun:
    def __init__(self, config: RunConfig, *, store: Store | None = None, data_dir=None,
                 dataset: ImageDataset | None = None, cancel: threading.Event | None = None,
                 origin: str = "cli", run_id: str | None = None, create_record: bool = True,
                 on_store_warning: Callable[[str], None] | None = None,
                 on_telemetry: TelemetryListener | None = None, tags: dict | None = None):
        self.config = config
        self.tags = dict(tags or {})  # written with the run's record (core.runs.store.RUN_TAGS: its sweep and trial)
        self.cancel = cancel or threading.Event()
        self.store = store
        self.store_warning = ""  # non-empty while part of the run is not in the store: what, why and what to do
        self.on_store_warning = on_store_warning  # told whenever store_warning changes
        # How a cancel ends the run when it is not a plain Stop: (status, reason), set by end_as().
        self.end_as_status, self.end_reason = "", ""
        self.resume_note = ""  # set by resume() when epochs recorded after the last saved weights were dropped
        # This process's memory, CPU and GPU use while it trains (a thread samples them about once a second): each
        # sample goes to on_telemetry (called from that thread), the summary to the store when a phase ends.
        self.telemetry = TelemetrySummary()
        self.on_telemetry = on_telemetry
        self.epochs: list[EpochResult] = []
        self.schedule: list[Phase] = []
        self.test_loss: float | None = None
        self.test_acc: float | None = None
        self.id = run_id or uuid.uuid4().hex[:12]
        self.origin = origin
        # What the store holds of this run; _save writes the rest.
        self._saved_record = not create_record
        self._saved_phases = 0
        self._saved_epochs = 0
        self._weights_unsaved = False  # the last weights write failed
        self._weights_epoch = 0  # the epoch whose weights the store holds
        self._weights_cost = 0.0  # seconds the last weights write took
        self._weights_saved_at = 0.0
        self._epoch_state: dict | None = None  # the last finished epoch's weights, optimizer and batch order
        try:
            self.dataset = dataset or load_dataset(config.dataset, data_dir)
            self.trainer = Trainer(config, self.dataset, self.cancel)
        except Exception as exc:  # no data, no device, a batch larger than the data...: still a run, so recorded
            if create_record:
                self._record_failed_start(exc, origin)
            raise
        self._save()

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
        epochs = store.epochs(run_id)
        done = run.trainer.epochs_done
        if len(epochs) > done:  # killed after recording epochs whose weights it had not saved yet
            store.delete_epochs_after(run_id, done)
            run.resume_note = (f"epoch{'s' * (len(epochs) - done > 1)} {done + 1}"
                               f"{f'-{len(epochs)}' if len(epochs) - done > 1 else ''} had been recorded but not "
                               f"the weights after {'them' if len(epochs) - done > 1 else 'it'} (the process was "
                               f"killed); training goes on from epoch {done}, whose weights are saved")
            epochs = epochs[:done]
        run.epochs = [EpochResult(**e, device=row["device"]) for e in epochs]
        run.telemetry.seed(row.get("peak_rss_bytes"), row.get("mean_cpu_percent"), row.get("mean_gpu_percent"),
                           seconds=sum(e["seconds"] or 0.0 for e in epochs))
        run.schedule = [Phase(e, lr) for e, lr in row["schedule"]]
        run.test_loss, run.test_acc = row["test_loss"], row["test_acc"]
        run.trainer.status = row["status"]
        run._saved_phases, run._saved_epochs, run._weights_epoch = len(run.schedule), len(run.epochs), done
        return run

    def _record_failed_start(self, exc: Exception, origin: str) -> None:
        if self.store is None:
            return
        try:
            self.store.create_run(self.config.to_dict(), device=self.config.device, data_source="",
                                  torch_version=torch.__version__, parameters=None, origin=origin, run_id=self.id,
                                  tags=self.tags)
            self.store.finish_run(self.id, RunStatus.FAILED, str(exc).strip() or type(exc).__name__)
        except StoreError as problem:
            self.report_store_problem(f"This failed run is NOT saved: {problem}")

    @property
    def status(self) -> str:
        return self.trainer.status

    @property
    def message(self) -> str:
        return self.trainer.stop_reason

    def report_store_problem(self, warning: str) -> None:
        """Set store_warning ('' once everything is saved) and tell the listener if it changed."""
        if warning != self.store_warning:
            self.store_warning = warning
            if self.on_store_warning is not None:
                self.on_store_warning(warning)

    def _save(self, final: bool = False, weights: dict | None = None) -> None:
        """Bring the store up to date: the record, phases and epochs it lacks, then (final) the status and result,
        then these weights (a Trainer.state), or the last epoch's if an earlier weights write failed. A write that
        fails leaves the rest for the next call."""
        if self.store is None:
            return
        store = self.store
        try:
            try:
                self._save_rows(store, final)
            except StoreEmptied:  # the file was emptied under us: this run is all in memory, so record it anew
                self._saved_record, self._saved_phases, self._saved_epochs, self._weights_epoch = False, 0, 0, 0
                self._weights_unsaved = True
                self._save_rows(store, final)
        except StoreError as exc:
            kept = f" after epoch {self._saved_epochs}" if self._saved_epochs else ""
            self.report_store_problem(f"This run is NOT being saved{kept} (training goes on): {exc}")
            return
        if weights is None and self._weights_unsaved:
            weights = self._epoch_state
        if weights is not None:
            started = time.monotonic()
            try:
                store.save_checkpoint(self.id, self.trainer.checkpoint(weights))
            except StoreError as exc:
                self._weights_unsaved = True
                self.report_store_problem(f"This run's weights are NOT saved (its epochs and result are), so it "
                                          f"cannot be continued or evaluated from here: {exc}")
                return
            finally:
                self._weights_cost, self._weights_saved_at = time.monotonic() - started, time.monotonic()
            self._weights_unsaved, self._weights_epoch = False, weights["epochs_done"]
        self.report_store_problem("")

    def _save_rows(self, store: Store, final: bool) -> None:
        if not self._saved_record:
            store.create_run(self.config.to_dict(), device=self.trainer.device_label,
                             data_source=self.dataset.source, torch_version=torch.__version__,
                             parameters=self.trainer.parameter_count, origin=self.origin, run_id=self.id,
                             tags=self.tags)
            self._saved_record = True
        while self._saved_phases < len(self.schedule):
            phase = self.schedule[self._saved_phases]
            store.add_phase(self.id, phase.epochs, phase.lr)
            self._saved_phases += 1
        while self._saved_epochs < len(self.epochs):
            store.add_epoch(self.id, self.epochs[self._saved_epochs].to_dict())
            self._saved_epochs += 1
        if final:
            store.finish_run(self.id, self.status, self.message, self.test_loss, self.test_acc)
            if self.telemetry.known:
                store.set_telemetry(self.id, self.telemetry.peak_rss_bytes, self.telemetry.mean_cpu_percent,
                                    self.telemetry.mean_gpu_percent)

    def _weights_due(self) -> bool:
        return time.monotonic() - self._weights_saved_at >= self._weights_cost / WEIGHTS_TIME_SHARE

    def _weights_lag(self) -> bool:
        """Whether the store's weights are older than the last finished epoch."""
        return self._epoch_state is not None and self._weights_epoch < self._epoch_state["epochs_done"]

    def interrupt(self, reason: str) -> None:
        """End the run between batches as interrupted (its server gone, SIGTERM, shutdown): it keeps the weights
        of its last finished epoch, so continuing it trains exactly as if it had never stopped."""
        self.end_as(RunStatus.INTERRUPTED, reason)

    def end_as(self, status: str, reason: str) -> None:
        """End the run between batches with `status` instead of "stopped": interrupted (see interrupt), or pruned
        (a sweep's pruner judged it: it ends as a Stop does, with its test accuracy and weights, so it can be
        continued)."""
        if status not in (RunStatus.INTERRUPTED, RunStatus.PRUNED):
            raise ValueError(f"a run cannot be ended as {status!r}")
        self.end_as_status, self.end_reason = status, reason
        self.cancel.set()

    def train_phase(self, epochs: int | None = None, lr: float | None = None,
                    on_epoch: EpochListener | None = None, on_progress: ProgressListener | None = None) -> str:
        """Train one phase (continuing the epoch count); returns the run's status afterwards."""
        phase = Phase(self.config.epochs if epochs is None else epochs, self.config.lr if lr is None else lr)
        self.schedule.append(phase)
        self._save()
        try:
            with self._sampling():
                for result in self.trainer.train(phase.epochs, phase.lr, on_progress):
                    self.epochs.append(result)
                    if self.store is not None:  # kept for an interrupt mid-epoch, and for a retry if its write fails
                        self._epoch_state = self.trainer.state(copy=True)
                    self._save(weights=self._epoch_state if self._weights_due() else None)
                    if on_epoch is not None:
                        on_epoch(result)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            self.trainer.status = RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
            self.trainer.stop_reason = one_line(exc)
            self._save(final=True, weights=self._epoch_state if interrupted and self._weights_lag() else None)
            raise
        self._finish_phase()
        return self.status

    @contextlib.contextmanager
    def _sampling(self):
        """Sample this process while the block trains; the summary is complete when it exits."""
        device = self.trainer.device
        sampler = TelemetrySampler(device.type, device.index or 0, on_sample=self.on_telemetry,
                                   summary=self.telemetry)
        sampler.start()
        try:
            yield sampler
        finally:
            sampler.stop()

    def run_schedule(self, phases: Iterable[Phase], on_epoch: EpochListener | None = None,
                     on_progress: ProgressListener | None = None) -> str:
        for phase in phases:
            if self.train_phase(phase.epochs, phase.lr, on_epoch, on_progress) != RunStatus.FINISHED:
                break
        return self.status

    def _finish_phase(self) -> None:
        end_as, reason = self.end_as_status, self.end_reason
        self.end_as_status, self.end_reason = "", ""  # asked of this phase only: a continued run stops plainly
        if self.status == RunStatus.STOPPED and end_as == RunStatus.INTERRUPTED:
            self.trainer.status, self.trainer.stop_reason = RunStatus.INTERRUPTED, reason
            self._save(final=True, weights=self._epoch_state if self._weights_lag() else None)
            return
        weights = None
        if self.status in (RunStatus.FINISHED, RunStatus.STOPPED) and self.epochs:
            self.test_loss, self.test_acc = self.trainer.evaluate_test()
            weights = self.trainer.state()
        if self.status == RunStatus.STOPPED and end_as:  # pruned
            self.trainer.status, self.trainer.stop_reason = end_as, reason
        self._save(final=True, weights=weights)

    def summary(self) -> dict:
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
            "median_epoch_seconds": median_timed_epoch(self.epochs),
            "device": self.trainer.device_label,
            "data_source": self.dataset.source,
            "data_note": self.dataset.note,
            "store_warning": self.store_warning,
            "warnings": self.warnings(),
            "peak_rss_bytes": self.telemetry.peak_rss_bytes,
            "mean_cpu_percent": self.telemetry.mean_cpu_percent,
            "mean_gpu_percent": self.telemetry.mean_gpu_percent,
        }

    def warnings(self) -> list[str]:
        """Not learning, or validation loss rising: what was seen and what to change (the run is kept)."""
        steps = math.ceil(self.trainer.n_train / self.config.batch_size)
        return learning_warnings(self.epochs, self.dataset.num_classes, steps_per_epoch=steps)


def one_line(exc: BaseException) -> str:
    """An exception as a run's message: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
