"""Share links: a config (and its later phases) as URL query parameters, and back through RunConfig's own
validation; and a config as JSON text."""
from __future__ import annotations

import json
import math
from typing import Mapping

from ..config import DATASETS, ConfigError, Phase, RunConfig, parse_hidden_sizes, parse_schedule, short_repr

# URL key -> config field. Short keys keep links readable; every value goes through RunConfig.
QUERY_KEYS = {"dataset": "dataset", "hidden": "hidden_sizes", "activation": "activation", "batch": "batch_size",
              "lr": "lr", "epochs": "epochs", "optimizer": "optimizer", "momentum": "momentum",
              "wd": "weight_decay", "device": "device", "seed": "seed", "val": "val_fraction",
              "pipeline": "pipeline"}
_ALWAYS = ("dataset", "hidden", "activation", "batch", "lr", "epochs", "optimizer", "device", "seed", "pipeline")
_INT_KEYS = {"batch", "epochs", "seed"}
_FLOAT_KEYS = {"lr", "momentum", "wd", "val"}


def config_to_query(config: RunConfig) -> dict[str, str]:
    """The config as query parameters: the settings people change always, the rest when not default."""
    default = RunConfig()
    values = config.to_dict()
    query = {}
    for key, name in QUERY_KEYS.items():
        value = values[name]
        if key not in _ALWAYS and value == getattr(default, name):
            continue
        if name == "hidden_sizes":
            query[key] = ",".join(str(h) for h in value)
        elif isinstance(value, float):
            query[key] = _number(value)
        else:
            query[key] = str(value)
    return query


THEN_KEY = "then"  # the phases after the first (epochs + lr), e.g. then=5@0.1 for the tutorial's schedule
SHARE_KEYS = (*QUERY_KEYS, THEN_KEY)


def _number(value: float) -> str:
    return f"{value:g}" if float(f"{value:g}") == value else repr(value)


def schedule_to_query(phases) -> dict[str, str]:
    """The phases after the first as {"then": "5@0.1,..."}; nothing for a one-phase run."""
    later = list(phases)[1:]
    return {THEN_KEY: ",".join(f"{p.epochs}@{_number(p.lr)}" for p in later)} if later else {}


def is_share_query(params: Mapping) -> bool:
    return any(key in params for key in SHARE_KEYS)


def share_from_query(params: Mapping) -> tuple[RunConfig, tuple[Phase, ...]]:
    """(config, later phases) from a share link; ConfigError lists every invalid value by its URL key."""
    problems, later = [], ()
    raw = _last_value(params.get(THEN_KEY, ""))
    if raw:
        try:
            later = parse_schedule(raw)
        except ConfigError as exc:
            problems.append(f"{THEN_KEY}={short_repr(raw)}: {str(exc).removeprefix('schedule: ')}")
    try:
        config = config_from_query(params)
    except ConfigError as exc:
        problems.insert(0, str(exc).removeprefix("invalid share link: "))
    if problems:
        raise ConfigError("invalid share link: " + "; ".join(problems))
    return config, later


def config_from_query(params: Mapping) -> RunConfig:
    """A RunConfig from share-link parameters (missing ones take defaults).

    Raises ConfigError listing every invalid value, each named by its URL key.
    """
    changes, problems = {}, []
    for key, name in QUERY_KEYS.items():
        if key not in params:
            continue
        raw = _last_value(params[key])
        try:
            value = _parse(key, raw)
            RunConfig(**{name: value})  # this field alone, so every bad field is reported
        except ConfigError as exc:
            problems.append(f"{key}={short_repr(raw)}: {_without_field(str(exc))}")
            continue
        changes[name] = value
    if problems:
        raise ConfigError("invalid share link: " + "; ".join(problems))
    try:
        return RunConfig(**changes)
    except ConfigError as exc:
        raise ConfigError(f"invalid share link: {exc}") from None


def _last_value(raw) -> str:
    """A query value as text: the last one where a key is repeated."""
    if isinstance(raw, (list, tuple)):
        raw = raw[-1] if raw else ""
    return str(raw).strip()


def _parse(key: str, raw: str):
    if key == "hidden":
        return parse_hidden_sizes(raw)  # '-64' stays -64, which RunConfig refuses ('-' only joins sizes: 128-64)
    if key in _INT_KEYS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key}: must be a whole number") from None
    if key in _FLOAT_KEYS:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key}: must be a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number")
        return value
    if key == "dataset" and raw not in DATASETS:
        raise ConfigError(f"dataset: must be one of {', '.join(DATASETS)}")
    return raw


def _without_field(message: str) -> str:
    head, sep, tail = message.partition(": ")
    return tail if sep and " " not in head else message


def config_json(config: RunConfig) -> str:
    return json.dumps(config.to_dict(), indent=2)
