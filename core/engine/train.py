"""The training loop: device-resident batches, per-epoch records, cancel, continue, divergence.

The engine emits plain immutable records (EpochResult per epoch, BatchProgress a few times a
second); a CLI or UI only draws them. Two data pipelines train the same model on the same batches:
"resident" keeps each split on the device as one float tensor and batches by indexing a seeded
randperm; "dataloader" is the tutorial's way (per-sample ToTensor, DataLoader, per-batch copy).
"""
from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from ..config import RunConfig, RunStatus, TrainingError  # noqa: F401 (TrainingError re-exported)
from . import checkpoint
from .data import ImageDataset, split_indices, to_float
from .devices import cpu_threads, device_label, resolve_device, synchronize
from .health import describe_batch_losses, lower_lr
from .memory import EVAL_CHUNK, check_fits
from .cuda_graph import GraphedStep, fastest_step, graph_support
from .model import parameter_count, summarize
from .step import TrainStep

PROGRESS_INTERVAL_S = 0.1  # how often BatchProgress is emitted (and the loss checked for NaN)

# The statuses a Trainer takes, under their old names for code that imports them from here; the engine says
# RunStatus.FINISHED etc. (core.config).
READY, RUNNING, FINISHED, STOPPED, DIVERGED, FAILED, INTERRUPTED = (
    RunStatus.READY, RunStatus.RUNNING, RunStatus.FINISHED, RunStatus.STOPPED, RunStatus.DIVERGED, RunStatus.FAILED,
    RunStatus.INTERRUPTED)


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based, continuing across phases
    phase: int  # 0-based index of the fit() call this epoch belongs to
    lr: float
    train_loss: float  # mean over the epoch's training batches
    val_loss: float
    val_acc: float  # fraction 0-1
    seconds: float  # wall time of training + validation, synchronized
    samples_per_s: float  # training samples / seconds
    warmup: bool  # first epoch this trainer ran: carries one-off costs (allocation, kernel init, caches)
    elapsed: float  # wall seconds of training so far, this epoch included
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


def median_timed_epoch(epochs, *, warmup_fallback: bool = True) -> float | None:
    """The typical epoch time in seconds: the median, warm-up epochs (one-off allocation and kernel costs) left
    out when others exist. Takes EpochResults or their dicts (as the store keeps them).

    With only warm-up epochs it is their median (a run's page still shows a time), or None with
    warmup_fallback=False: a speed comparison, where a warm-up time passed off as the typical one would
    mislead (the comparison shows the warm-up time apart)."""
    def field(epoch, name):
        return epoch[name] if isinstance(epoch, dict) else getattr(epoch, name)

    seconds = [field(e, "seconds") for e in epochs]
    timed = [s for e, s in zip(epochs, seconds) if not field(e, "warmup")] or (seconds if warmup_fallback else [])
    return statistics.median(timed) if timed else None


@dataclass(frozen=True)
class BatchProgress:
    epoch: int
    batch: int  # batches done in this epoch
    batches: int  # batches in the epoch
    seconds: float  # since the epoch started
    train_loss: float | None = None  # mean loss of the batches since the previous record (None: no new batch)

    @property
    def position(self) -> float:
        """Where in training this is, in epochs (3.5: half-way through epoch 4): the x of a per-batch curve."""
        return self.epoch - 1 + self.batch / self.batches


def _weighted_mean(losses: list[float], sizes: list[int]) -> float | None:
    """Sample-weighted mean of batch losses (the last batch of an epoch can be smaller); None for no batches."""
    return sum(v * n for v, n in zip(losses, sizes)) / sum(sizes) if losses else None


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


class Trainer:
    """Owns one TrainStep (model, gradients, optimizer) and its data on one device; train() can be called again to
    continue."""

    def __init__(self, config: RunConfig, dataset: ImageDataset, cancel: threading.Event | None = None):
        self.config = config
        self.dataset = dataset
        self.cancel = cancel or threading.Event()
        self.device = resolve_device(config.device)
        self.device_label = device_label(self.device)
        train_idx, val_idx = split_indices(len(dataset.train_labels), config.val_fraction, config.seed)
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        if config.batch_size > self.n_train:
            raise TrainingError(f"batch size {config.batch_size} is larger than the {self.n_train:,} training "
                                f"samples of {dataset.title}; choose at most {self.n_train}")
        check_fits(config, dataset.input_size, self.n_train, self.n_val, self.device)
        try:
            self.train_step = TrainStep(config, dataset.input_size, dataset.num_classes, self.device)
            # What each batch calls: the step, or on CUDA (resident pipeline) its captured graph.
            self.step = fastest_step(self.train_step, config, self.device)
            self.graph_note = graph_support(config, self.device.type)[1]
            self.train_y = dataset.train_labels[train_idx].to(self.device)
            self.val_x = to_float(dataset.train_images[val_idx]).to(self.device)
            self.val_y = dataset.train_labels[val_idx].to(self.device)
            if config.pipeline == "resident":
                # float32 in [0, 1], converted once: per batch, uint8 -> float division costs more than the gather.
                self.train_x = to_float(dataset.train_images[train_idx]).to(self.device)
        except Exception as exc:
            if _is_oom(exc):
                raise TrainingError(f"out of memory on {self.device_label} while loading the model and data: "
                                    f"use a smaller model or batch") from None
            raise
        self.train_idx, self.val_idx = train_idx, val_idx
        # Batch order comes from a CPU generator, so the same seed gives the same batches on any device.
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.epochs_done = 0
        self.epochs_trained_here = 0  # by this object: its first epoch pays the warm-up costs
        self.phases_done = 0
        self.elapsed = 0.0
        self.status = RunStatus.READY
        self.stop_reason = ""
        # Guessing uniformly costs log(classes); a hundred times that is a run that has blown up, not learning.
        self.divergence_loss = 100 * math.log(dataset.num_classes)
        self.summary = summarize(self.model)
        self.parameter_count = parameter_count(self.model)

    @property
    def model(self):
        return self.train_step.model

    @property
    def optimizer(self):
        return self.train_step.optimizer

    @property
    def step_fn(self):
        """The hand-written loss and gradients of one batch (no update)."""
        return self.train_step.gradients

    @property
    def graph_step(self) -> GraphedStep | None:
        return self.step if isinstance(self.step, GraphedStep) else None

    # -- training ---------------------------------------------------------------------------------
    def train(self, epochs: int | None = None, lr: float | None = None,
              on_progress: Callable[[BatchProgress], None] | None = None) -> Iterator[EpochResult]:
        """One phase (the tutorial's fit(epochs, lr)): yields an EpochResult after each epoch.

        Ends early when cancel is set (status "stopped") or the loss is NaN/inf ("diverged"); the
        epochs already yielded stay valid. Epoch numbers continue from earlier calls.
        """
        epochs = self.config.epochs if epochs is None else epochs
        lr = self.config.lr if lr is None else lr
        if epochs < 1 or not (lr > 0 and math.isfinite(lr)):
            raise TrainingError(f"a phase needs at least 1 epoch and a positive learning rate; got {epochs}@{lr}")
        self.optimizer.lr = lr
        phase = self.phases_done
        self.phases_done += 1
        self.status, self.stop_reason = RunStatus.RUNNING, ""
        try:
            with cpu_threads(self.config.threads, self.device):
                for _ in range(epochs):
                    result = self._epoch(phase, lr, on_progress)
                    if result is None:
                        return
                    yield result
            self.status = RunStatus.FINISHED
        except TrainingError:
            self.status = RunStatus.FAILED
            raise
        except Exception as exc:
            self.status = RunStatus.FAILED
            if _is_oom(exc):
                raise TrainingError(f"out of memory on {self.device_label} at batch size {self.config.batch_size}: "
                                    f"use a smaller batch or model") from None
            raise
        finally:
            if self.status == RunStatus.RUNNING:  # generator closed early by the consumer
                self.status = RunStatus.STOPPED

    def _epoch(self, phase: int, lr: float, on_progress) -> EpochResult | None:
        epoch = self.epochs_done + 1
        order = torch.randperm(self.n_train, generator=self.batch_generator)
        synchronize(self.device)
        start = time.perf_counter()
        if self.config.pipeline == "resident":
            batches = self._resident_batches(order.to(self.device))
        else:
            batches = self._dataloader_batches(order)
        train_loss = self._run_batches(batches, epoch, start, on_progress)
        if train_loss is None:
            return None
        if self.config.pipeline == "resident":
            val_loss, val_acc = self.evaluate_tensors(self.val_x, self.val_y)
        else:
            val_loss, val_acc = self._evaluate_dataloader()
        synchronize(self.device)
        seconds = time.perf_counter() - start
        if not self._sane(val_loss):  # no record for this epoch, so it does not count as done either
            return self._diverged(epoch, f"validation loss reached {val_loss:.3g} in epoch {epoch}")
        self.elapsed += seconds
        self.epochs_done = epoch
        warmup = self.epochs_trained_here == 0
        self.epochs_trained_here += 1
        return EpochResult(epoch, phase, lr, train_loss, val_loss, val_acc, seconds, self.n_train / seconds,
                           warmup=warmup, elapsed=self.elapsed, device=self.device_label)

    def _resident_batches(self, order: torch.Tensor):
        size = self.config.batch_size
        for first in range(0, self.n_train, size):
            idx = order[first:first + size]
            # index_select is ~2.5x cheaper per call than x[idx] (no advanced-indexing dispatch).
            yield self.train_x.index_select(0, idx), self.train_y.index_select(0, idx)

    def _dataloader_batches(self, order: torch.Tensor):
        loader = _tutorial_loader(self.dataset, self.train_idx[order], self.config.batch_size)
        for images, labels in loader:
            # The tutorial's DeviceDataLoader: every batch crosses to the device on its own.
            images = images.view(images.shape[0], -1)
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def _run_batches(self, batches, epoch: int, start: float, on_progress) -> float | None:
        n_batches = math.ceil(self.n_train / self.config.batch_size)
        losses, sizes = [], []
        last_report, reported = start, 0  # batches already in a progress record
        step = self.step
        for i, (x, y) in enumerate(batches, 1):
            if self.cancel.is_set():
                self.status, self.stop_reason = RunStatus.STOPPED, f"stopped during epoch {epoch}"
                return None
            losses.append(step(x, y))
            sizes.append(y.shape[0])
            now = time.perf_counter()
            if now - last_report >= PROGRESS_INTERVAL_S:
                last_report = now
                recent = torch.stack(losses[reported:]).tolist()  # sync point on GPUs, a few per second
                loss = recent[-1]
                if not self._sane(loss):
                    self._diverged(epoch, f"training loss reached {loss:.3g} at batch {i} of epoch {epoch}", losses)
                    return None
                if on_progress is not None:
                    mean = _weighted_mean(recent, sizes[reported:])
                    on_progress(BatchProgress(epoch, i, n_batches, now - start, mean))
                reported = i
        weights = torch.tensor(sizes, dtype=torch.float32, device=self.device)
        train_loss = float((torch.stack(losses) * weights).sum() / self.n_train)
        if not self._sane(train_loss):
            self._diverged(epoch, f"mean training loss reached {train_loss:.3g} in epoch {epoch}", losses)
            return None
        if on_progress is not None:
            rest = torch.stack(losses[reported:]).tolist() if reported < len(losses) else []
            on_progress(BatchProgress(epoch, n_batches, n_batches, time.perf_counter() - start,
                                      _weighted_mean(rest, sizes[reported:])))
        return train_loss

    def _sane(self, loss: float) -> bool:
        return math.isfinite(loss) and loss <= self.divergence_loss

    def _diverged(self, epoch: int, reason: str, batch_losses: list[torch.Tensor] | None = None) -> None:
        self.status = RunStatus.DIVERGED
        story = describe_batch_losses(torch.stack(batch_losses).tolist(), self.divergence_loss) if batch_losses else ""
        lr = self.optimizer.lr
        self.stop_reason = (reason + (f" ({story})" if story else "")
                            + f". The learning rate {lr:g} is too high for this model: try {lower_lr(lr):g}")
        return None

    # -- evaluation -------------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate_tensors(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(mean cross-entropy, accuracy 0-1) over float inputs already on the device."""
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for first in range(0, len(y), EVAL_CHUNK):
            logits = self.model(x[first:first + EVAL_CHUNK])
            target = y[first:first + EVAL_CHUNK]
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
        return loss_sum.item() / len(y), correct.item() / len(y)

    @torch.inference_mode()
    def _evaluate_dataloader(self) -> tuple[float, float]:
        loss_sum, correct = 0.0, 0
        for images, labels in _tutorial_loader(self.dataset, self.val_idx, self.config.batch_size):
            images, labels = images.to(self.device), labels.to(self.device)
            logits = self.model(images.view(len(images), -1))
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
        return loss_sum / self.n_val, correct / self.n_val

    def evaluate_test(self) -> tuple[float, float]:
        """(loss, accuracy) on the official test split, which training and selection never see."""
        x = to_float(self.dataset.test_images).to(self.device)
        return self.evaluate_tensors(x, self.dataset.test_labels.to(self.device))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (on the CPU) for uint8 images."""
        x = to_float(images).to(self.device)
        return torch.cat([self.model(x[i:i + EVAL_CHUNK]).softmax(1).cpu() for i in range(0, len(x), EVAL_CHUNK)])

    # -- checkpoints (the format: core.engine.checkpoint) -----------------------------------------
    def state(self, copy: bool = False) -> dict:
        """Weights, optimizer and batch-order state as CPU tensors; copy=True clones them, so training can go on
        while the copy keeps this moment."""
        return checkpoint.of_step(self.config, self.train_step, self.batch_generator, epochs_done=self.epochs_done,
                                  phases_done=self.phases_done, elapsed=self.elapsed, copy=copy)

    def checkpoint(self, state: dict | None = None) -> bytes:
        """A state (default: now) as bytes, enough to continue later."""
        return checkpoint.to_bytes(state if state is not None else self.state())

    def restore(self, blob: bytes) -> None:
        self.epochs_done, self.phases_done, self.elapsed = checkpoint.restore(blob, self.train_step,
                                                                              self.batch_generator)


class PerSampleImages(torch.utils.data.Dataset):
    """What torchvision's MNIST does per item: uint8 -> PIL image -> ToTensor (float, C x H x W)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        from torchvision.transforms import ToTensor

        self.images, self.labels = images, labels
        self.to_tensor = ToTensor()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        image = self.images[i]
        pil = Image.fromarray(image[0].numpy()) if image.shape[0] == 1 else \
            Image.fromarray(image.permute(1, 2, 0).numpy())
        return self.to_tensor(pil), int(self.labels[i])


def _tutorial_loader(dataset: ImageDataset, indices: torch.Tensor, batch_size: int):
    """DataLoader over per-sample ToTensor items, in the given index order (so batches match the resident run)."""
    batches = [indices[i:i + batch_size].tolist() for i in range(0, len(indices), batch_size)]
    return torch.utils.data.DataLoader(PerSampleImages(dataset.train_images, dataset.train_labels),
                                       batch_sampler=batches)
