"""Runs that learn nothing, or get worse, are flagged with a hint; a divergence says what the batch losses did."""
from __future__ import annotations

import math

from core.config import Phase, RunConfig
from core.engine.health import describe_batch_losses, learning_warnings, lower_lr
from core.runs.training_run import TrainingRun
from core.engine.train import DIVERGED, FINISHED, EpochResult, Trainer

CPU = {"device": "cpu", "threads": 1}


def record(epoch: int, val_acc: float, val_loss: float, train_loss: float = 1.0, lr: float = 0.5) -> EpochResult:
    return EpochResult(epoch, 0, lr, train_loss, val_loss, val_acc, 0.1, 1000.0, epoch == 1, 0.1 * epoch, "cpu")


def test_a_run_at_chance_is_flagged_only_after_enough_epochs():
    at_chance = [record(e, 0.10, 2.35) for e in range(1, 4)]
    assert learning_warnings(at_chance[:2]) == []
    (warning,) = learning_warnings(at_chance, 10, steps_per_epoch=2, lr=2.0)
    assert "Not learning" in warning and "10.0%" in warning
    assert "try 0.2" in warning  # ten times lower
    assert "2 optimizer steps" in warning and "smaller batch" in warning


def test_a_learning_run_is_not_flagged():
    learning = [record(e, acc, loss) for e, (acc, loss) in enumerate([(0.9, 0.4), (0.93, 0.3), (0.94, 0.25),
                                                                       (0.95, 0.2)], 1)]
    assert learning_warnings(learning, 10, steps_per_epoch=480) == []


def test_rising_validation_loss_tells_overfitting_from_a_too_high_rate():
    overfitting = [record(e, 0.97, loss, train_loss=1.0 / e) for e, loss in enumerate([0.10, 0.11, 0.12, 0.13], 1)]
    (warning,) = learning_warnings(overfitting)
    assert "rose 3 epochs in a row" in warning and "overfitting" in warning and "best epoch was 1" in warning
    too_high = [record(e, 0.9, loss, train_loss=loss) for e, loss in enumerate([0.3, 0.4, 0.5, 0.6], 1)]
    (warning,) = learning_warnings(too_high)
    assert "learning rate is too high" in warning and "0.05" in warning
    two_rises = [record(e, 0.9, loss) for e, loss in enumerate([0.3, 0.2, 0.4, 0.5], 1)]
    assert learning_warnings(two_rises) == []


def test_batch_loss_story_names_the_start_the_lowest_and_the_blow_up():
    story = describe_batch_losses([2.3, 1.9, 1.5, 40.0, 300.0, math.nan], limit=230)
    assert story == "batch losses went 2.3 at batch 1, lowest 1.5 at batch 3, 300 at batch 5"
    assert describe_batch_losses([math.nan], 230) == "batch losses went nan at batch 1"
    assert lower_lr(2.0) == 0.2 and lower_lr(0.001) == 0.0001


def test_adam_at_lr_2_finishes_but_warns_that_it_learns_nothing(sample):
    # Adam at lr 2 on the tutorial model: the loss never explodes past the divergence bar, the run "finishes",
    # and validation accuracy stays at ~10 %.
    run = TrainingRun(RunConfig(**CPU, optimizer="adam", lr=2.0, epochs=3), dataset=sample)
    assert run.run_schedule([Phase(3, 2.0)]) == FINISHED
    assert max(e.val_acc for e in run.epochs) < 0.15
    warnings = run.summary()["warnings"]
    assert len(warnings) == 1 and "Not learning" in warnings[0] and "try 0.2" in warnings[0]


def test_a_seed_run_has_no_warnings(sample):
    run = TrainingRun(RunConfig(**CPU, epochs=3), dataset=sample)
    run.run_schedule([Phase(3, 0.5)])
    assert run.summary()["warnings"] == []


def test_divergence_in_the_first_epoch_says_what_the_batch_losses_did(sample):
    trainer = Trainer(RunConfig(**CPU, hidden_sizes=(256, 256, 256), lr=2.0), sample)
    results = list(trainer.train(2))
    assert trainer.status == DIVERGED and results == []
    reason = trainer.stop_reason
    assert "epoch 1" in reason and "batch losses went" in reason and "at batch 1" in reason, reason
    assert "try 0.2" in reason, reason
