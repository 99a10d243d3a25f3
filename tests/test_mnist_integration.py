"""The tutorial's result on the full MNIST: skipped when the raw files are not on this machine."""
from pathlib import Path

import pytest

from support import shared_dataset_dir
from core.engine import data
from core.config import TUTORIAL_SCHEDULE, RunConfig
from core.runs.training_run import TrainingRun
from core.engine.train import FINISHED

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

pytestmark = pytest.mark.integration


def mnist_root() -> Path | None:
    root = shared_dataset_dir("MNIST")
    return root if root and all((root / "MNIST" / "raw" / name).is_file() for name in RAW_FILES) else None


@pytest.fixture(scope="module")
def mnist():
    root = mnist_root()
    if root is None:
        pytest.skip("full MNIST raw files not found under $DATA_DIR or ../shared/datasets")
    data.clear_cache()
    dataset = data.load_dataset("mnist", root, download=False, allow_sample=False)
    yield dataset
    data.clear_cache()


def test_full_mnist_loads(mnist):
    assert mnist.source == data.SOURCE_FULL == "full"
    assert mnist.train_images.shape == (60000, 1, 28, 28)
    assert mnist.test_images.shape == (10000, 1, 28, 28)
    assert mnist.note == ""


def test_tutorial_schedule_reaches_the_tutorial_accuracy(mnist):
    run = TrainingRun(RunConfig(device="cpu"), dataset=mnist)
    assert run.trainer.n_train == 48000 and run.trainer.n_val == 12000
    assert run.run_schedule(TUTORIAL_SCHEDULE) == FINISHED
    assert [(e.epoch, e.phase, e.lr) for e in run.epochs] == \
        [(i, 0, 0.5) for i in range(1, 6)] + [(i, 1, 0.1) for i in range(6, 11)]
    final = run.epochs[-1]
    assert final.val_acc >= 0.965, [round(e.val_acc, 4) for e in run.epochs]
    assert run.test_acc > 0.95
    summary = run.summary()
    assert summary["data_source"] == "full"
    assert summary["test_acc"] == run.test_acc
