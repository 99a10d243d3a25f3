"""Same-start check (core.studies.parity): the Trainer's first batch and weights, 1 vs 2 threads, what fails it."""
from __future__ import annotations

import json

import pytest
import torch

from core.studies.legs import Leg
from core.config import RunConfig
from core.engine.data import load_dataset
from core.studies.parity import (SAME_START_BAR, StartPoint, compare_start, first_batch, passes, start_check_job,
                                 start_checks, start_point, weights_checksum)
from core.engine.train import Trainer

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow


def test_the_check_uses_the_trainers_initial_weights_and_first_batch(small_sample):
    config = RunConfig(hidden_sizes=(24, 12), batch_size=64, seed=11, threads=1)
    trainer = Trainer(config, small_sample)
    order = torch.randperm(trainer.n_train, generator=trainer.batch_generator)  # epoch 1's order
    x, y = next(trainer._resident_batches(order))
    loss, grads = trainer.step_fn(x, y)
    point = start_point(config, small_sample)
    assert point.weights_sha256 == weights_checksum(trainer.model)
    assert point.first_loss == loss.item()  # the same numbers, same thread count: bit for bit
    assert all(torch.equal(a, b) for a, b in zip(point.grads, grads))


def test_the_tutorial_pipeline_prepares_the_same_first_batch(small_sample):
    resident = first_batch(RunConfig(batch_size=32), small_sample)
    tutorial = first_batch(RunConfig(batch_size=32, pipeline="dataloader"), small_sample)
    assert torch.equal(resident[0], tutorial[0]) and torch.equal(resident[1], tutorial[1])


def test_one_and_two_threads_start_the_same_within_1e_5(sample):
    rows = start_checks(RunConfig(hidden_sizes=(128,)), [Leg("cpu", 1), Leg("cpu", 2)], sample)
    assert [row["threads"] for row in rows] == [1, 2]
    assert rows[0]["weights_match"] is None and passes(rows[0]) is None  # the reference
    assert rows[1]["weights_match"] is True
    assert rows[1]["loss_rel_diff"] <= SAME_START_BAR and rows[1]["grad_rel_diff"] <= SAME_START_BAR
    assert passes(rows[1]) is True
    assert torch.get_num_threads() == 1  # restored (conftest sets 1)


def test_different_weights_or_arithmetic_fail_the_check(small_sample):
    one = start_point(RunConfig(seed=1), small_sample)
    other_seed = start_point(RunConfig(seed=2), small_sample)
    assert passes(compare_start(one, other_seed)) is False
    assert compare_start(one, other_seed)["weights_match"] is False
    # the same weights, but a bias gradient off by 1e-3 (as a reduced-precision product would be): caught even
    # though the large weight gradients agree
    grads = list(one.grads)
    grads[1] = grads[1] * (1 + 1e-3)
    nudged = StartPoint(one.device, one.threads, one.weights_sha256, one.first_loss, tuple(grads))
    row = compare_start(one, nudged)
    assert row["weights_match"] and row["grad_rel_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert passes(row) is False


def test_a_leg_whose_device_is_missing_gets_an_error_not_a_crash(small_sample):
    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    rows = start_checks(RunConfig(), [Leg("cpu", 1), Leg("cuda")], small_sample)
    assert rows[0]["error"] == "" and "CUDA" in rows[1]["error"] and passes(rows[1]) is None


def test_the_same_thread_count_twice_is_bit_identical(small_sample):
    """Why drift is not a fault: the same leg twice gives identical per-epoch losses."""
    config = RunConfig(epochs=2, threads=1)
    first, second = (list(Trainer(config, small_sample).train()) for _ in range(2))
    assert [e.val_loss for e in first] == [e.val_loss for e in second]


def test_the_check_runs_as_a_worker_job_with_the_same_rows(tmp_path):
    """The dashboard's job (core.studies.comparisons) and the CLI's compare (start_checks in its own process) give
    the same rows."""
    (tmp_path / "data").mkdir()  # empty: the 5,000-digit sample
    specs = ("device=cpu,threads=1", "device=cpu,threads=2")
    rows = start_check_job(None, data_dir=str(tmp_path / "data"), base=RunConfig().to_dict(), legs=specs)
    assert [row["spec"] for row in rows] == list(specs) and passes(rows[1]) is True
    json.dumps(rows)  # it crosses the worker's socket and is stored in the report
    in_process = start_checks(RunConfig(), [Leg.parse(spec) for spec in specs],
                              load_dataset(RunConfig().dataset, str(tmp_path / "data")))
    assert in_process == rows
