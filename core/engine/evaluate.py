"""A trained model on the test split: accuracy, loss, confusion matrix, per-class accuracy, predictions.

Models come from a run's stored checkpoint (core.runs.models) or from a weights file (core.exchange); the weights
are checked against the shapes their config implies before loading, so a mismatch names the layer.
Everything is computed in torch and returned as plain numpy arrays and lists for any front end.
The test split is the official one (10,000 images for the full datasets), which training and
model selection never see.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelLoadError, RunConfig  # noqa: F401 (ModelLoadError re-exported)
from .data import DATASET_SPECS, ImageDataset, load_dataset, to_float
from .devices import cpu_threads, resolve_device
from .memory import EVAL_CHUNK
from .model import build_mlp, macs_per_sample

def build_model(config: RunConfig, state_dict: dict) -> nn.Sequential:
    """The config's MLP with the given weights, in eval mode on the CPU; ModelLoadError on any mismatch."""
    spec = DATASET_SPECS[config.dataset]
    model = build_mlp(config, spec.input_size, spec.num_classes)
    expected = model.state_dict()
    if not isinstance(state_dict, dict):
        raise ModelLoadError(f"the weights should be a state_dict (a dict of tensors), got {type(state_dict).__name__}")
    missing = [k for k in expected if k not in state_dict]
    extra = [k for k in state_dict if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected {', '.join(map(str, extra))}")
        raise ModelLoadError(f"the weights do not fit a {layer_layout(config)} MLP: {'; '.join(parts)}")
    for name, tensor in expected.items():
        given = state_dict[name]
        if not isinstance(given, torch.Tensor) or not given.is_floating_point():
            raise ModelLoadError(f"weight {name} should be a float tensor, got {type(given).__name__}")
        if given.shape != tensor.shape:
            raise ModelLoadError(f"weight {name} has shape {tuple(given.shape)} but the config "
                                 f"({layer_layout(config)}) needs {tuple(tensor.shape)}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()})
    model.eval().requires_grad_(False)
    return model


def layer_layout(config: RunConfig) -> str:
    """Layer widths from input to classes, e.g. '784-32-10'."""
    spec = DATASET_SPECS[config.dataset]
    sizes = [spec.input_size, *config.hidden_sizes, spec.num_classes]
    return "-".join(str(s) for s in sizes)


def evaluation_cost(config: RunConfig, n_images: int | None = None) -> float:
    """Multiply-accumulates of one pass over the test split (to decide whether to evaluate without asking)."""
    spec = DATASET_SPECS[config.dataset]
    n = spec.test_size if n_images is None else n_images
    return float(n) * macs_per_sample(spec.input_size, config.hidden_sizes, spec.num_classes)


@dataclass(frozen=True)
class Evaluation:
    dataset: str
    data_title: str  # e.g. "MNIST" or "MNIST (5,000-image sample)"
    data_source: str
    classes: tuple[str, ...]
    loss: float  # mean cross-entropy over the test split
    accuracy: float  # fraction 0-1
    labels: np.ndarray  # int64 [n]: the true class of each test image
    predicted: np.ndarray  # int64 [n]
    confidence: np.ndarray  # float32 [n]: softmax probability of the predicted class
    confusion: np.ndarray  # int64 [classes, classes]: rows are true classes, columns predictions

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def mistakes(self) -> int:
        return int((self.predicted != self.labels).sum())

    @property
    def class_counts(self) -> list[int]:
        return self.confusion.sum(axis=1).tolist()

    @property
    def per_class_accuracy(self) -> list[float | None]:
        """Accuracy among the test images of each true class (None for a class with no images)."""
        counts = self.confusion.sum(axis=1)
        return [float(self.confusion[c, c] / counts[c]) if counts[c] else None for c in range(len(self.classes))]

    def sample_indices(self, limit: int, only_mistakes: bool = False, true_class: int | None = None) -> list[int]:
        """Test-image indices to show: the mistakes, most confident first; then, unless only_mistakes, the correct
        predictions one class after another (test order within a class). A test split in class order would
        otherwise fill the grid with correct zeros, which teaches nothing."""
        keep = np.ones(self.n, dtype=bool)
        if true_class is not None:
            keep &= self.labels == true_class
        wrong = self.predicted != self.labels
        mistakes = np.flatnonzero(keep & wrong)
        mistakes = mistakes[np.argsort(-self.confidence[mistakes], kind="stable")]
        if only_mistakes:
            return mistakes[:max(0, limit)].tolist()
        correct = np.flatnonzero(keep & ~wrong)
        labels = self.labels[correct]
        rank = np.zeros(len(correct), dtype=np.int64)  # the image's place among its class's correct ones
        for c in np.unique(labels):
            rank[labels == c] = np.arange(int((labels == c).sum()))
        correct = correct[np.lexsort((labels, rank))]
        return np.concatenate([mistakes, correct])[:max(0, limit)].tolist()


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: ImageDataset, *, device: str = "cpu", threads: int | None = None,
             chunk: int = EVAL_CHUNK) -> Evaluation:
    """Run the model over the dataset's test split once; every number below comes from that pass."""
    target = resolve_device(device)
    model = model.to(target)
    with cpu_threads(threads, target):
        loss_sum = torch.zeros((), dtype=torch.float64)
        predicted, confidence = [], []
        for first in range(0, len(dataset.test_labels), chunk):
            x = to_float(dataset.test_images[first:first + chunk]).to(target)
            y = dataset.test_labels[first:first + chunk].to(target)
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
            top, best = logits.softmax(1).max(1)
            predicted.append(best.cpu())
            confidence.append(top.cpu())
    labels = dataset.test_labels.to(torch.int64)
    pred = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.int64)
    classes = len(dataset.classes)
    confusion = torch.bincount(labels * classes + pred, minlength=classes * classes).view(classes, classes)
    n = len(labels)
    return Evaluation(
        dataset=dataset.name, data_title=dataset.title, data_source=dataset.source, classes=tuple(dataset.classes),
        loss=float(loss_sum) / n if n else float("nan"),
        accuracy=float((pred == labels).sum()) / n if n else float("nan"),
        labels=labels.numpy().copy(), predicted=pred.numpy().copy(),
        confidence=(torch.cat(confidence) if confidence else torch.zeros(0)).numpy().copy(),
        confusion=confusion.numpy().copy())


def evaluate_weights(config: RunConfig, state_dict: dict, *, data_dir=None, dataset: ImageDataset | None = None,
                     device: str = "cpu", threads: int | None = None) -> Evaluation:
    """Build the model from its weights and evaluate it on its dataset's test split."""
    dataset = dataset or load_dataset(config.dataset, data_dir)
    return evaluate(build_model(config, state_dict), dataset, device=device, threads=threads)


def display_images(dataset: ImageDataset, indices: list[int], scale: int = 3) -> list[np.ndarray]:
    """Test images as uint8 arrays ready to draw: H x W (grey) or H x W x 3 (colour), enlarged by `scale`
    with nearest-neighbour pixels so small digits stay sharp."""
    if not indices:
        return []
    batch = dataset.test_images[torch.as_tensor(indices, dtype=torch.int64)]
    if scale > 1:
        batch = batch.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    arrays = batch.permute(0, 2, 3, 1).contiguous().numpy()  # N x H x W x C
    return [a[:, :, 0] if a.shape[2] == 1 else a for a in arrays]
