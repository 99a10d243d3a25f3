"""Same-start check for comparison legs: do the legs begin from the same numbers?

Whole training trajectories are no parity test. Two legs that differ only in thread count or device
add up each matrix product's partial sums in a different order; float addition is not associative,
so every step's result differs in its last bits, and over thousands of SGD steps those differences
compound: per-epoch validation losses drift apart (1e-7 to 1e-1 relative, depending on the model and
learning rate), while the same leg run twice is bit-identical. That drift is reported as drift.

What must agree to rounding is the start, and this module checks it: for each leg it builds the
Trainer's own step (core.engine.step.TrainStep: the seeded model and its hand-written gradients) on the leg's
device with the leg's thread count, takes the Trainer's first training batch (the seeded randperm over the
train split of core.engine.data.split_indices, through the leg's pipeline), and computes

- a checksum of the initial weights (SHA-256 of their float32 bytes, read back from the device),
- the first batch's loss and gradient.

Legs start the same when the checksums are equal and the loss and every gradient tensor agree with
the first leg's within SAME_START_BAR relative. On CUDA the check runs with TF32 off (IEEE fp32
matmuls), so a reduced-precision mode cannot pass as rounding.

`start_checks` runs in this process (the CLI's compare); the dashboard runs it as a job in a training worker
(`start_check_job`: its own thread setting and CUDA context, not the web server's).
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..engine.data import ImageDataset, split_indices, to_float
from ..engine.devices import cpu_threads, device_label, resolve_device, synchronize
from .legs import Leg
from ..engine.step import TrainStep

SAME_START_BAR = 1e-5  # relative: first-batch loss and gradient differences that are still rounding


@dataclass(frozen=True)
class StartPoint:
    """What one leg computes before its first update."""

    device: str  # label, e.g. "CPU: Intel Xeon (2 cores)"
    threads: int | None  # torch CPU threads it computed with (None off the CPU)
    weights_sha256: str
    first_loss: float
    grads: tuple[torch.Tensor, ...]  # on the CPU, in MLPStep.params order (weight, bias per layer)


def first_batch_indices(config: RunConfig, n_samples: int) -> torch.Tensor:
    """Indices into the dataset's training images of the Trainer's first batch.

    core/engine/train.py: the train split comes from split_indices, and each epoch's order from
    torch.randperm over it with a CPU generator seeded by config.seed (its first call: epoch 1).
    """
    train_idx, _ = split_indices(n_samples, config.val_fraction, config.seed)
    order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(config.seed))
    return train_idx[order[:config.batch_size]]


def first_batch(config: RunConfig, dataset: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(float inputs N x features, labels) of the first batch, prepared the way the leg's pipeline does."""
    idx = first_batch_indices(config, len(dataset.train_labels))
    if config.pipeline == "dataloader":  # per-sample PIL image + ToTensor, as the tutorial's DataLoader
        from ..engine.train import PerSampleImages

        items = PerSampleImages(dataset.train_images, dataset.train_labels)
        x = torch.stack([items[int(i)][0] for i in idx]).reshape(len(idx), -1)
    else:
        x = to_float(dataset.train_images[idx])
    return x, dataset.train_labels[idx]


def weights_checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def ieee_fp32_matmuls():
    """TF32 off for CUDA matmuls while the check runs (restored after)."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.fp32_precision
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = previous


def start_point(config: RunConfig, dataset: ImageDataset) -> StartPoint:
    """The leg's initial-weight checksum and first batch's loss and gradient, on its device and threads."""
    device = resolve_device(config.device)
    with cpu_threads(config.threads, device), ieee_fp32_matmuls():
        step = TrainStep(config, dataset.input_size, dataset.num_classes, device)  # the Trainer's own, unstepped
        x, y = first_batch(config, dataset)
        loss, grads = step.gradients(x.to(device), y.to(device))
        synchronize(device)
        return StartPoint(device_label(device), torch.get_num_threads() if device.type == "cpu" else None,
                          weights_checksum(step.model), float(loss), tuple(g.cpu() for g in grads))


def relative_difference(reference: torch.Tensor, other: torch.Tensor) -> float:
    """||other - reference|| / ||reference|| in float64 (0 when both are zero)."""
    a, b = reference.double(), other.double()
    scale = a.norm().item()
    diff = (b - a).norm().item()
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def compare_start(reference: StartPoint, other: StartPoint) -> dict:
    """How far `other` starts from `reference`: weights equal?, loss and largest per-tensor gradient difference."""
    loss = abs(other.first_loss - reference.first_loss) / max(abs(reference.first_loss), 1e-30)
    grads = max((relative_difference(a, b) for a, b in zip(reference.grads, other.grads)), default=0.0)
    return {"weights_match": other.weights_sha256 == reference.weights_sha256,
            "loss_rel_diff": loss, "grad_rel_diff": grads}


def start_checks(base: RunConfig, legs, dataset: ImageDataset) -> list[dict]:
    """One JSON-ready row per leg: its device, threads, checksum, first loss, and its differences from leg 1.

    A leg whose check cannot run (its device is gone) gets an "error" and no numbers."""
    rows, reference = [], None
    for leg in legs:
        row = {"spec": leg.spec()}
        try:
            point = start_point(leg.config(base), dataset)
        except Exception as exc:  # reported per leg: the other legs' checks still count
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"})
            continue
        row.update(device=point.device, threads=point.threads, weights_sha256=point.weights_sha256,
                   first_loss=point.first_loss, error="")
        if reference is None:
            reference = point
            row.update(weights_match=None, loss_rel_diff=None, grad_rel_diff=None)
        else:
            row.update(compare_start(reference, point))
        rows.append(row)
    return rows


def start_check_job(link, data_dir=None, base: dict | None = None, legs: tuple[str, ...] = ()) -> list[dict]:
    """start_checks in a training worker (a core.runs.worker job, started by core.studies.comparisons): its own
    thread setting (the workers') and CUDA context, not the web server's."""
    from ..engine.data import load_dataset

    config = RunConfig.from_dict(base or {})
    return start_checks(config, [Leg.parse(spec) for spec in legs], load_dataset(config.dataset, data_dir))


def passes(row: dict | None) -> bool | None:
    """True when a non-reference leg's row is within rounding of leg 1; None when it was not checked."""
    if not row or row.get("error") or row.get("weights_match") is None:
        return None
    return bool(row["weights_match"]) and row["loss_rel_diff"] <= SAME_START_BAR and \
        row["grad_rel_diff"] <= SAME_START_BAR
