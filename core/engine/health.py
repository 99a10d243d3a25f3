"""Is a run learning? Warnings with hints, read from its epoch records, for the CLI and the UI alike.

A run can end "finished" and have learned nothing (accuracy at chance: a learning rate far too high for
Adam, or a huge batch that leaves a handful of steps per epoch), or get worse epoch after epoch. These
checks never stop a run; they say what was seen and what to change.
"""
from __future__ import annotations

import math
from typing import Sequence

CHANCE_EPOCHS = 3  # epochs at chance level before a run is flagged (the first ones can be slow starters)
CHANCE_MARGIN = 1.5  # "at chance": best validation accuracy below 1.5x a uniform guess (15 % for 10 classes)
RISING_EPOCHS = 3  # validation loss rose this many epochs in a row
FEW_STEPS = 50  # optimizer steps per epoch below which "more steps per epoch" is a hint worth giving


def lower_lr(lr: float) -> float:
    """A learning rate ten times lower, for hints."""
    return float(f"{lr / 10:.2g}")


def learning_warnings(epochs: Sequence, num_classes: int = 10, *, steps_per_epoch: int | None = None,
                      lr: float | None = None) -> list[str]:
    """Plain-language warnings for EpochResult-like records (val_acc, val_loss, train_loss, epoch, lr)."""
    warnings = []
    if len(epochs) >= CHANCE_EPOCHS:
        best = max(e.val_acc for e in epochs)
        if best < CHANCE_MARGIN / num_classes:
            warnings.append(_at_chance(epochs, best, num_classes, steps_per_epoch, lr))
    if len(epochs) > RISING_EPOCHS:
        tail = epochs[-(RISING_EPOCHS + 1):]
        if all(b.val_loss > a.val_loss for a, b in zip(tail, tail[1:])):
            warnings.append(_rising(epochs, tail))
    return warnings


def _at_chance(epochs, best: float, num_classes: int, steps_per_epoch: int | None, lr: float | None) -> str:
    last = epochs[-1]
    lr = last.lr if lr is None else lr
    text = (f"Not learning: after {len(epochs)} epochs the best validation accuracy is {best:.1%}, about what "
            f"guessing gives ({1 / num_classes:.0%} for {num_classes} classes).")
    hints = []
    if last.val_loss > 1.05 * math.log(num_classes):  # worse than a uniform guess: steps overshoot
        hints.append(f"the validation loss ({last.val_loss:.3g}) is above a uniform guess's "
                     f"({math.log(num_classes):.2f}), so the steps overshoot: lower the learning rate "
                     f"(try {lower_lr(lr):g})")
    else:
        hints.append(f"lower the learning rate (try {lower_lr(lr):g}) or try another optimizer")
    if steps_per_epoch is not None and steps_per_epoch < FEW_STEPS:
        hints.append(f"an epoch has only {steps_per_epoch} optimizer steps: a smaller batch gives more steps per epoch")
    return text + " " + "; ".join(hints).capitalize() + "."


def _rising(epochs, tail) -> str:
    first, last = tail[0], tail[-1]
    text = (f"Validation loss rose {RISING_EPOCHS} epochs in a row ({first.val_loss:.3g} at epoch {first.epoch} -> "
            f"{last.val_loss:.3g} at epoch {last.epoch}).")
    best = min(epochs, key=lambda e: e.val_loss)
    if last.train_loss > first.train_loss:
        return text + (f" The training loss rose too, so the learning rate is too high for this stage: continue at "
                       f"a lower one (try {lower_lr(last.lr):g}).")
    return text + (f" The training loss still falls, so the model is overfitting: its best epoch was {best.epoch} "
                   f"(validation loss {best.val_loss:.3g}, accuracy {best.val_acc:.1%}); more epochs will not help.")


def describe_batch_losses(losses: Sequence[float], limit: float) -> str:
    """What the batch losses of a diverging epoch did: start, lowest, and the first one past `limit`."""
    values = list(losses)
    if not values:
        return ""
    bad = next((i for i, v in enumerate(values) if not (math.isfinite(v) and v <= limit)), len(values) - 1)
    finite = [(i, v) for i, v in enumerate(values[:bad]) if math.isfinite(v)]
    parts = [f"{values[0]:.3g} at batch 1"]
    if finite:
        low_i, low = min(finite, key=lambda p: p[1])
        if low_i > 0:
            parts.append(f"lowest {low:.3g} at batch {low_i + 1}")
    if bad > 0:
        parts.append(f"{values[bad]:.3g} at batch {bad + 1}")
    return "batch losses went " + ", ".join(parts)
