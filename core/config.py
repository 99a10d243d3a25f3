"""The run configuration: one frozen dataclass whose defaults are the tutorial's settings.

Every value is checked at construction, so a bad setting fails with a message that names the field
and its allowed range before any data is loaded or any thread is started.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where `python -m core ...` subprocesses start

DATASETS = ("mnist", "fashion_mnist", "cifar10")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
OPTIMIZERS = ("sgd", "sgd_momentum", "adam")
DEVICES = ("auto", "cpu", "cuda", "mps")
PIPELINES = ("resident", "dataloader")

MAX_HIDDEN_SIZE = 8192
MAX_HIDDEN_LAYERS = 16
MAX_BATCH_SIZE = 65536
MAX_EPOCHS = 1000


# -- errors: one hierarchy for the engine; each class is re-exported by the module that raises it ----------
class LabError(Exception):
    """Base of every error the engine raises on purpose: its message says what went wrong and what to do."""


class ConfigError(LabError, ValueError):
    """A run setting is outside what the engine accepts; the message names the field."""


class DeviceError(LabError, RuntimeError):
    """The requested device cannot be used here; the message says why."""


class DataError(LabError, RuntimeError):
    """Data is missing, unreachable or corrupt; the message says what to do."""


class TrainingError(LabError, RuntimeError):
    """Training cannot start or go on (out of memory, batch larger than the data...)."""


class StoreError(LabError, RuntimeError):
    """The run database cannot be opened or written; the message says which file, why, and what to do."""


class StoreEmptied(StoreError):
    """The database file lost its tables while in use (emptied, truncated, deleted or replaced): the Store has
    created them again, and whoever holds a run in memory can record it anew."""


class WeightsFileError(LabError, ValueError):
    """An uploaded weights file is corrupt, foreign, or does not match its config; the message says which."""


class ModelLoadError(LabError, ValueError):
    """Weights cannot be turned into a model (missing, corrupt, or not matching their config)."""


# -- statuses: one vocabulary for runs, comparisons and speedup maps ---------------------------------------
class RunStatus(StrEnum):
    """What a run, a comparison or a speedup map is doing, or how it ended. Members are the strings themselves
    (RunStatus.FINISHED == "finished"), so stored rows, JSON and the pages' lookups by plain string agree."""

    READY = "ready"  # a Trainer built, nothing trained yet
    WAITING = "waiting"  # a speedup map waiting for the machine to be quiet
    QUEUED = "queued"  # waiting for its turn on the device
    LOADING = "loading"  # reading data, building the model
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"  # asked to stop
    PRUNED = "pruned"  # a sweep's pruner stopped it early: its epochs so far looked worse than other trials'
    CANCELLED = "cancelled"  # a speedup map cut short
    DIVERGED = "diverged"  # the loss became NaN or inf
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its process ended (crash, kill, shutdown) before it did


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "mnist"
    hidden_sizes: tuple[int, ...] = (32,)  # one entry per hidden layer
    activation: str = "relu"
    batch_size: int = 100  # samples per step
    lr: float = 0.5  # learning rate of the first phase
    epochs: int = 5  # epochs of the first phase
    optimizer: str = "sgd"
    momentum: float = 0.9  # used by sgd_momentum only
    weight_decay: float = 0.0
    device: str = "auto"
    seed: int = 42
    val_fraction: float = 0.2  # share of the official training set held out for validation
    pipeline: str = "resident"  # "dataloader" is the tutorial's per-sample ToTensor + DataLoader
    threads: int | None = None  # torch intra-op threads for CPU runs; None keeps the process setting
    cuda_graphs: bool = True  # on CUDA with the resident pipeline: replay each step as one captured CUDA graph

    def __post_init__(self) -> None:
        hidden = self.hidden_sizes
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if not isinstance(hidden, (list, tuple)):
            raise ConfigError(f"hidden_sizes: must be a list of whole numbers; got {short_repr(hidden)}")
        object.__setattr__(self, "hidden_sizes", tuple(hidden))
        _choice("dataset", self.dataset, DATASETS)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("device", self.device, DEVICES)
        _choice("pipeline", self.pipeline, PIPELINES)
        if not 1 <= len(self.hidden_sizes) <= MAX_HIDDEN_LAYERS:
            raise ConfigError(f"hidden_sizes: need 1 to {MAX_HIDDEN_LAYERS} hidden layers, "
                              f"got {len(self.hidden_sizes)}")
        for size in self.hidden_sizes:
            _int_range("hidden_sizes", size, 1, MAX_HIDDEN_SIZE)
        _int_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _int_range("epochs", self.epochs, 1, MAX_EPOCHS)
        _int_range("seed", self.seed, 0, 2**63 - 1)
        _float_range("lr", self.lr, 0.0, 10.0, low_open=True)
        _float_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _float_range("weight_decay", self.weight_decay, 0.0, 1.0)
        _float_range("val_fraction", self.val_fraction, 0.0, 0.9, low_open=True)
        if self.threads is not None:
            _int_range("threads", self.threads, 1, 256)
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"cuda_graphs: must be true or false; got {short_repr(self.cuda_graphs)}")

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """The config a dict of settings describes (missing ones take defaults); ConfigError for anything else,
        whatever the dict holds (it may come from an uploaded file or an old database row)."""
        if not isinstance(data, dict):
            raise ConfigError(f"the config should be a dict of settings; got {short_repr(data)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(name) for name in data if name not in known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {_clip(', '.join(unknown))}")
        return cls(**data)

    def describe(self, schedule=()) -> str:
        """A short human label such as 'mnist [32] relu, batch 100, sgd lr 0.5'.

        With the run's schedule (phases or (epochs, lr) pairs) of more than one phase, the learning rates
        as trained: '..., sgd lr 5@0.5,3@0.05'.
        """
        layers = "-".join(str(h) for h in self.hidden_sizes)
        pairs = [tuple(p) for p in schedule]
        rates = schedule_text(pairs) if len(pairs) > 1 else f"{(pairs[0][1] if pairs else self.lr):g}"
        return f"{self.dataset} [{layers}] {self.activation}, batch {self.batch_size}, {self.optimizer} lr {rates}"


@dataclass(frozen=True)
class Phase:
    """One stretch of training at a fixed learning rate (the tutorial's fit(epochs, lr))."""

    epochs: int
    lr: float

    def __iter__(self):  # unpacks like the (epochs, lr) pairs the store keeps
        return iter((self.epochs, self.lr))

    def __post_init__(self) -> None:
        _int_range("epochs", self.epochs, 1, MAX_EPOCHS)
        _float_range("lr", self.lr, 0.0, 10.0, low_open=True)


def schedule_text(schedule) -> str:
    """Phases or [[5, 0.5], [5, 0.1]] -> '5@0.5,5@0.1' (the CLI's --schedule syntax)."""
    return ",".join(f"{int(e)}@{float(lr):g}" for e, lr in schedule)


def _list_parts(text: str, what: str, item: str, example: str) -> list[str]:
    """'a, b' -> ['a', 'b']: commas (or spaces) between items; a trailing comma is fine, an empty item between
    two is not (a value was left out: '32,,64' must not silently become 32,64)."""
    parts = [part.strip() for part in re.split(r"\s*,\s*|\s+", str(text).strip())]
    if parts and parts[-1] == "":
        parts.pop()  # "5@0.5," or "128, 64,"
    if not parts:
        raise ConfigError(f"{what}: give at least one {item}, e.g. {example}")
    if "" in parts:
        raise ConfigError(f"{what}: {str(text).strip()!r} has an empty {item} between commas (one left out?); "
                          f"e.g. {example}")
    return parts


def parse_schedule(text: str) -> tuple[Phase, ...]:
    """'5@0.5,5@0.1' -> (Phase(5, 0.5), Phase(5, 0.1))."""
    phases = []
    for part in _list_parts(text, "schedule", "phase", "5@0.5,5@0.1"):
        epochs, sep, lr = part.partition("@")
        if not sep:
            raise ConfigError(f"schedule: '{part}' should look like EPOCHS@LR, e.g. 5@0.5")
        try:
            phases.append(Phase(int(epochs), float(lr)))
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise ConfigError(f"schedule: {exc}") from None
            raise ConfigError(f"schedule: '{part}' should look like EPOCHS@LR, e.g. 5@0.5") from None
    return tuple(phases)


def parse_hidden_sizes(text: str) -> tuple[int, ...]:
    """'128,64' (or '128, 64', '128 64', or the CSV export's '128-64') -> (128, 64).

    Only the syntax is checked here; RunConfig checks the sizes ('-64' parses to -64 and is refused there).
    """
    sizes = []
    for part in _list_parts(text, "hidden_sizes", "size", "128,64"):
        pieces = part.split("-") if re.fullmatch(r"[0-9]+(-[0-9]+)+", part) else [part]
        for piece in pieces:
            if not re.fullmatch(r"-?[0-9]+", piece):
                raise ConfigError(f"hidden_sizes: {part!r} is not a whole number; give sizes separated by commas, "
                                  f"e.g. 128,64")
            sizes.append(int(piece))
    return tuple(sizes)


def phases_from_pairs(pairs) -> tuple[Phase, ...]:
    """A schedule kept as data ([[5, 0.5], [5, 0.1]]: the store's column, a weights file's run section) as
    Phases; ConfigError naming the phase when it is not a list of [epochs, lr] pairs that Phase accepts."""
    if not isinstance(pairs, (list, tuple)):
        raise ConfigError(f"schedule: should be a list of [epochs, lr] pairs; got {short_repr(pairs)}")
    phases = []
    for i, pair in enumerate(pairs, 1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"schedule: phase {i} should be an [epochs, lr] pair; got {short_repr(pair)}")
        try:
            phases.append(Phase(*pair))
        except ConfigError as exc:
            raise ConfigError(f"schedule: phase {i}: {exc}") from None
    return tuple(phases)


def short_repr(value, limit: int = 60) -> str:
    """A value as a message quotes it, cut short (a setting read from a file may be megabytes long)."""
    return _clip(repr(value), limit)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}; got {short_repr(value)}")


def _int_range(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: must be a whole number from {low} to {high}; got {short_repr(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{name}: must be from {low} to {high}; got {value}")


def _float_range(name: str, value, low: float, high: float, low_open=False, high_open=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number; got {short_repr(value)}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(f"{name}: must be in {left}{low:g}, {high:g}{right}; got {value:g}")


TUTORIAL_SCHEDULE = (Phase(5, 0.5), Phase(5, 0.1))  # fit(5, 0.5) then fit(5, 0.1)
