"""Helpers the tests share (conftest.py holds only fixtures): tiny IDX files and synthetic datasets, and
`python -m core` subprocesses whose data and run database live in a temporary folder, never the repository."""
from __future__ import annotations

import time

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from core.engine import data as core_data
from core.engine.data import ImageDataset

REPO_ROOT = Path(__file__).resolve().parent.parent
IDX_UBYTE_3D = 0x00000803  # uint8, 3 dimensions (images)
IDX_UBYTE_1D = 0x00000801  # uint8, 1 dimension (labels)


# -- data helpers -------------------------------------------------------------------------------------
def shared_dataset_dir(folder: str = "MNIST") -> Path | None:
    """Where the real dataset `folder` is in torchvision's layout (<root>/<folder>/raw/...): $DATA_DIR, else
    ../shared/datasets beside the repository (read only: nothing is written there); None when neither has it."""
    for candidate in (os.environ.get("DATA_DIR"), REPO_ROOT.parent / "shared" / "datasets"):
        raw = Path(candidate or "") / folder / "raw"
        if candidate and raw.is_dir() and any(raw.iterdir()):
            return Path(candidate)
    return None


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> None:
    """Write an IDX file: big-endian magic, big-endian int32 dims, then the uint8 bytes."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for dim in array.shape:
            f.write(struct.pack(">i", dim))
        f.write(array.tobytes())


def make_idx_dataset(root: Path, folder: str = "MNIST", n_train: int = 20, n_test: int = 7, seed: int = 0,
                     size: int = 28) -> dict:
    """Write <root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte; return the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        write_idx(raw / f"{split}-images-idx3-ubyte", images, IDX_UBYTE_3D)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels, IDX_UBYTE_1D)
        arrays[split] = (images, labels)
    arrays["raw"] = raw
    return arrays


def synthetic_dataset(n_train: int = 1000, n_test: int = 200, seed: int = 0, shape=(1, 28, 28),
                      num_classes: int = 10) -> ImageDataset:
    """A learnable uint8 dataset: each class brightens its own band of pixels, plus noise."""
    g = torch.Generator().manual_seed(seed)
    features = int(np.prod(shape))

    def make(n):
        labels = torch.randint(0, num_classes, (n,), generator=g)
        images = torch.randint(0, 60, (n, features), generator=g, dtype=torch.int64)
        band = features // num_classes
        for c in range(num_classes):
            rows = labels == c
            images[rows, c * band:(c + 1) * band] += 150
        return images.clamp_(0, 255).to(torch.uint8).view(n, *shape), labels

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    classes = tuple(str(c) for c in range(num_classes))
    return ImageDataset("mnist", train_x, train_y, test_x, test_y, classes, core_data.SOURCE_FULL, "synthetic")


def zeros_dataset(n_train: int, n_test: int = 10) -> ImageDataset:
    """A dataset of blank images, for tests that must not get as far as training."""
    return ImageDataset("mnist", torch.zeros(n_train, 1, 28, 28, dtype=torch.uint8),
                        torch.zeros(n_train, dtype=torch.int64), torch.zeros(n_test, 1, 28, 28, dtype=torch.uint8),
                        torch.zeros(n_test, dtype=torch.int64), core_data.CLASS_NAMES["mnist"],
                        core_data.SOURCE_FULL)


# -- subprocess helpers --------------------------------------------------------------------------------
def cli_environment(workdir: Path) -> dict:
    """Environment for `python -m core` subprocesses: data and run database under workdir, never the repo."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["DATA_DIR"] = str(data_dir)
    env["RUNS_DB"] = str(workdir / "env-runs.db")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def start_cli(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
    options = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    options.update(kwargs)
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=env, **options)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """predicate()'s first true value, asked every `interval` s; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
