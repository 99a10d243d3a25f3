"""A stored run's fields and epoch records, checked: the rules a row of the store and a weights file's run section
and history both obey (core.runs.history opens stored runs through them; core.exchange.weights reads files through
them). Each check raises ValueError naming the first bad field, and returns the checked values only.
"""
from __future__ import annotations

import math

from ..config import ConfigError, Phase, phases_from_pairs, short_repr
from .store import EPOCH_FIELDS

RUN_TEXT_FIELDS = ("id", "status", "device", "data_source")
MAX_RUN_TEXT = 200  # characters: ids, device names and data sources are far shorter
# name, lowest, highest; a test loss may be inf (a model whose logits overflowed), a date or an accuracy may not
_RUN_NUMBERS = (("created_at", 0.0, 1e11), ("test_acc", 0.0, 1.0), ("test_loss", 0.0, math.inf))


def check_run_section(run) -> dict:
    """A run's fields as a weights file (or a row of the store) carries them, checked: ValueError naming the
    first bad one. Texts, a timestamp, test results in range, and the schedule through
    config.phases_from_pairs (Phase's rules). Returns the checked fields only."""
    if not isinstance(run, dict):
        raise ValueError(f"should be a dict; got a {type(run).__name__}")
    checked = {}
    for key in RUN_TEXT_FIELDS:
        value = run.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_RUN_TEXT:
            raise ValueError(f"{key}: should be a text of at most {MAX_RUN_TEXT} characters; got {short_repr(value)}")
        checked[key] = value
    for key, low, high in _RUN_NUMBERS:
        value = run.get(key)
        if value is None:
            continue
        if not is_number(value) or not low <= value <= high:  # NaN fails this too
            raise ValueError(f"{key}: should be a number from {low:g} to {high:g}; got {short_repr(value)}")
        checked[key] = float(value)
    try:
        phases = phases_from_pairs([] if run.get("schedule") is None else run["schedule"])
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    checked["schedule"] = [[p.epochs, p.lr] for p in phases]
    return checked


_EPOCH_NUMBERS = ("train_loss", "val_loss", "val_acc", "seconds", "samples_per_s", "elapsed")


def check_epochs(records) -> list[dict]:
    """Epoch records as the store keeps them (EPOCH_FIELDS), checked: ValueError naming the first bad one."""
    if not isinstance(records, list):
        raise ValueError(f"should be a list of epochs; got a {type(records).__name__}")
    checked, previous = [], 0
    for i, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise ValueError(f"record {i} is a {type(record).__name__}, not a dict")
        missing = [key for key in EPOCH_FIELDS if key not in record]
        if missing:
            raise ValueError(f"record {i} lacks {', '.join(missing)}")
        epoch, phase = record["epoch"], record["phase"]
        if not is_int(epoch) or epoch <= previous:
            raise ValueError(f"record {i} has epoch {short_repr(epoch)} after {previous}")
        if not is_int(phase) or phase < 0:
            raise ValueError(f"epoch {epoch} has phase {short_repr(phase)}")
        try:
            Phase(1, record["lr"])  # the learning-rate rule every phase obeys
        except ConfigError as exc:
            raise ValueError(f"epoch {epoch}: {exc}") from None
        for key in _EPOCH_NUMBERS:
            if record[key] is not None and not is_number(record[key]):
                raise ValueError(f"epoch {epoch} has {key} {short_repr(record[key])}")
        if record["val_acc"] is not None and not 0.0 <= record["val_acc"] <= 1.0:
            raise ValueError(f"epoch {epoch} has val_acc {record['val_acc']!r}, outside 0 to 1")
        if not isinstance(record["warmup"], bool) and record["warmup"] not in (0, 1):
            raise ValueError(f"epoch {epoch} has warmup {short_repr(record['warmup'])}")
        checked.append({key: bool(record[key]) if key == "warmup" else record[key] for key in EPOCH_FIELDS})
        previous = epoch
    return checked


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
