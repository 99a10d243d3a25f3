"""A sweep's search space: per hyperparameter a fixed value, a range (log-scaled with `:log`) or choices.

The CLI's syntax, "hidden=16..1024:log,layers=1..3,lr=0.001..1:log,batch_size=32..1024:log,optimizer=sgd|adam",
parses into one frozen SearchSpace (parse_space). Every end of a range and every choice is checked by building
the RunConfig it would give, so the limits are RunConfig's own (core.config). A trial's params become a RunConfig
through `config`: "hidden" is the width of each of "layers" hidden layers (hidden_sizes = (hidden,) * layers).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..config import ConfigError, RunConfig

# name -> (kind, the RunConfig settings one value of it gives)
DIMENSIONS = {
    "hidden": (int, lambda v: {"hidden_sizes": (v,)}),
    "layers": (int, lambda v: {"hidden_sizes": (1,) * v}),
    "batch_size": (int, lambda v: {"batch_size": v}),
    "lr": (float, lambda v: {"lr": v}),
    "weight_decay": (float, lambda v: {"weight_decay": v}),
    "momentum": (float, lambda v: {"momentum": v}),
    "activation": (str, lambda v: {"activation": v}),
    "optimizer": (str, lambda v: {"optimizer": v}),
}
DEFAULT_SPACE = "hidden=16..1024:log,layers=1..3,lr=0.001..1:log,batch_size=32..1024:log,optimizer=sgd|adam"
GRID_POINTS = 3  # values a range contributes to a grid sweep (its ends and, log-evenly or evenly, between)


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter: `choices` (one choice: a fixed value) or a range low..high, log-scaled or not."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def __post_init__(self) -> None:
        if self.name not in DIMENSIONS:
            raise ConfigError(f"unknown hyperparameter {self.name!r}; known: {', '.join(DIMENSIONS)}")
        kind = DIMENSIONS[self.name][0]
        if self.choices:
            if self.low is not None or self.high is not None or self.log:
                raise ConfigError(f"{self.name}: give a range or choices, not both")
            for value in self.choices:
                self._check(value)
            if len(set(self.choices)) != len(self.choices):
                raise ConfigError(f"{self.name}: a choice is given twice")
            return
        if kind is str:
            raise ConfigError(f"{self.name}: give choices such as a|b, not a range")
        if self.low is None or self.high is None:
            raise ConfigError(f"{self.name}: give choices or a range LOW..HIGH")
        self._check(self.low)
        self._check(self.high)
        if not self.low < self.high:
            raise ConfigError(f"{self.name}={self.low:g}..{self.high:g}: a range must go up (LOW < HIGH)")
        if self.log and self.low <= 0:
            raise ConfigError(f"{self.name}={self.low:g}..{self.high:g}:log: a log range needs LOW > 0")

    def _check(self, value) -> None:
        kind, settings = DIMENSIONS[self.name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{self.name}: {value!r} is not a whole number")
        try:
            RunConfig(**settings(value))
        except ConfigError as exc:
            raise ConfigError(f"{self.name}={value}: {exc}") from None

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1

    def suggest(self, trial):
        """This dimension's value for an Optuna trial."""
        if self.choices:
            return self.choices[0] if self.fixed else trial.suggest_categorical(self.name, list(self.choices))
        if DIMENSIONS[self.name][0] is int:
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def grid(self, points: int = GRID_POINTS) -> list:
        """The values a grid sweep tries: the choices, or `points` values spread over the range, ends included."""
        if self.choices:
            return list(self.choices)
        kind = DIMENSIONS[self.name][0]
        if kind is int and self.high - self.low + 1 <= points:
            return list(range(self.low, self.high + 1))
        if self.log:
            values = [self.low * (self.high / self.low) ** (i / (points - 1)) for i in range(points)]
        else:
            values = [self.low + (self.high - self.low) * i / (points - 1) for i in range(points)]
        if kind is int:
            return sorted({int(round(v)) for v in values})
        return [float(f"{v:.4g}") if 0 < i < points - 1 else v for i, v in enumerate(values)]

    def text(self) -> str:
        if self.choices:
            return f"{self.name}={'|'.join(_value_text(c) for c in self.choices)}"
        return f"{self.name}={_value_text(self.low)}..{_value_text(self.high)}{':log' if self.log else ''}"


@dataclass(frozen=True)
class SearchSpace:
    dimensions: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        names = [d.name for d in self.dimensions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"space: {', '.join(twice)} given twice")
        if not self.searched:
            raise ConfigError("space: nothing to search: give at least one range or choice of several values")

    @property
    def searched(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if not d.fixed)

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)

    def suggest(self, trial) -> dict:
        """A trial's params (fixed ones included), in the space's order."""
        return {d.name: d.suggest(trial) for d in self.dimensions}

    def grid(self) -> dict[str, list]:
        """The grid sampler's search space: the values per searched dimension."""
        return {d.name: d.grid() for d in self.searched}

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def config(self, base: RunConfig, params: dict) -> RunConfig:
        """The run a trial trains: the base config with the trial's params (hidden x layers -> hidden_sizes)."""
        changes = {name: value for name, value in params.items() if name not in ("hidden", "layers")}
        width = params.get("hidden", base.hidden_sizes[0])
        depth = params.get("layers", len(base.hidden_sizes))
        if "hidden" in params or "layers" in params:
            changes["hidden_sizes"] = (int(width),) * int(depth)
        return base.replace(**changes)

    def text(self) -> str:
        """The CLI syntax that parses back to this space."""
        return ",".join(d.text() for d in self.dimensions)


def parse_space(text: str) -> SearchSpace:
    """'hidden=16..1024:log,layers=1..3,optimizer=sgd|adam,lr=0.1' -> SearchSpace; ConfigError with a one-line
    reason for anything else."""
    items = [item.strip() for item in str(text).split(",")]
    if not str(text).strip() or "" in items:
        raise ConfigError(f"space: {str(text).strip()!r} has an empty entry; give NAME=LOW..HIGH[:log], NAME=A|B or "
                          f"NAME=VALUE separated by commas, e.g. {DEFAULT_SPACE}")
    return SearchSpace(tuple(_parse_dimension(item) for item in items))


def _parse_dimension(item: str) -> Dimension:
    name, sep, spec = (part.strip() for part in item.partition("="))
    if not sep or not name or not spec:
        raise ConfigError(f"space: {item!r} should look like NAME=LOW..HIGH[:log], NAME=A|B or NAME=VALUE")
    if name not in DIMENSIONS:
        raise ConfigError(f"space: unknown hyperparameter {name!r}; known: {', '.join(DIMENSIONS)}")
    try:
        log = spec.endswith(":log")
        body = spec.removesuffix(":log")
        if ".." in body:
            low, _, high = body.partition("..")
            if not re.fullmatch(r"\s*[^.|:\s][^|:]*\s*", low) or not re.fullmatch(r"\s*[^.|:\s][^|:]*\s*", high) \
                    or ".." in high:
                raise ConfigError(f"{item!r} should look like {name}=LOW..HIGH[:log]")
            return Dimension(name, _number(name, low), _number(name, high), log)
        if log:
            raise ConfigError(f"{item!r}: ':log' goes with a range LOW..HIGH")
        return Dimension(name, choices=tuple(_number(name, c) for c in body.split("|")))
    except ConfigError as exc:
        raise ConfigError(f"space: {exc}") from None


def _number(name: str, text: str):
    kind = DIMENSIONS[name][0]
    text = text.strip()
    if not text:
        raise ConfigError(f"{name}: an empty value")
    if kind is str:
        return text
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a {'whole number' if kind is int else 'number'}") from None


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
