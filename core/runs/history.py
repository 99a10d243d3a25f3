"""The run history as tables and series: one summary row per stored run, and curves to overlay.

Plain dicts and lists only, so the dashboard, the CSV export and tests read the same numbers.
"""
from __future__ import annotations

import math
from datetime import datetime

from ..config import ConfigError, Phase, RunConfig, phases_from_pairs, schedule_text
from .records import check_epochs, check_run_section
from .store import Store
from ..engine.train import median_timed_epoch

# Settings that can tell runs apart in a legend, with a short label each.
LEGEND_FIELDS = {"dataset": "", "hidden_sizes": "hidden ", "activation": "", "batch_size": "batch ",
                 "optimizer": "", "lr": "lr ", "momentum": "momentum ", "weight_decay": "wd ", "seed": "seed ",
                 "val_fraction": "val ", "pipeline": "", "device": ""}


def stored_run(run: dict, epochs: list[dict] | None = None) -> tuple[RunConfig, tuple[Phase, ...]]:
    """A stored run's config and schedule, through the rules new runs obey (RunConfig, Phase), and its epochs
    when given; ConfigError saying what is wrong with a row that cannot be opened (written by an older version,
    an upload before uploads were checked, or edited by hand)."""
    config = RunConfig.from_dict(run.get("config"))
    try:
        schedule = check_run_section(run)["schedule"]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if epochs is not None:
        try:
            check_epochs(epochs)
        except ValueError as exc:
            raise ConfigError(f"epoch history: {exc}") from None
    return config, phases_from_pairs(schedule)


def run_problem(run: dict, epochs: list[dict] | None = None) -> str:
    """'' when the stored run can be opened, else why not (stored_run's message)."""
    try:
        stored_run(run, epochs)
    except ConfigError as exc:
        return str(exc)
    return ""


def summarize_run(run: dict, epochs: list[dict], has_weights: bool = False) -> dict:
    """One row of the runs table (keys are the CSV's columns). A run that cannot be opened still gets its row,
    with what can be read of it and the reason in "problem"."""
    problem = run_problem(run, epochs)
    if problem:
        return _unreadable_row(run, epochs, has_weights, problem)
    config = run["config"]
    val = [e["val_acc"] for e in epochs if e["val_acc"] is not None]
    schedule = run.get("schedule") or []
    return {
        "run_id": run["id"],
        "created": _when(run["created_at"]),
        "dataset": config["dataset"],
        "layers": len(config["hidden_sizes"]),
        "hidden_sizes": "-".join(str(h) for h in config["hidden_sizes"]),
        "activation": config["activation"],
        "batch_size": config["batch_size"],
        "lr_schedule": schedule_text(schedule) if schedule else f"{config['epochs']}@{config['lr']:g}",
        "optimizer": config["optimizer"],
        "device": run.get("device", ""),
        "pipeline": config["pipeline"],
        "epochs": len(epochs),
        "status": run["status"],
        "best_val_acc": max(val) if val else None,
        "final_val_acc": val[-1] if val else None,
        "test_acc": run.get("test_acc"),
        "median_epoch_s": median_timed_epoch(epochs),
        **telemetry_figures(run),
        "origin": run.get("origin", ""),
        **sweep_tags(run),
        "data_source": run.get("data_source", ""),
        "weights_kept": has_weights,
        "message": run.get("message", ""),
        "problem": "",
    }


def _unreadable_row(run: dict, epochs: list[dict], has_weights: bool, problem: str) -> dict:
    config = run.get("config") if isinstance(run.get("config"), dict) else {}
    hidden = config.get("hidden_sizes")
    return {
        "run_id": run["id"], "created": _when(run.get("created_at")), "dataset": str(config.get("dataset", "?")),
        "layers": len(hidden) if isinstance(hidden, list) else None,
        "hidden_sizes": "-".join(str(h) for h in hidden) if isinstance(hidden, list) else str(hidden),
        "activation": str(config.get("activation", "?")), "batch_size": None, "lr_schedule": "?",
        "optimizer": str(config.get("optimizer", "?")), "device": str(run.get("device") or ""),
        "pipeline": str(config.get("pipeline", "?")), "epochs": len(epochs), "status": str(run.get("status")),
        "best_val_acc": None, "final_val_acc": None, "test_acc": None, "median_epoch_s": None,
        **telemetry_figures(run),
        "origin": str(run.get("origin") or ""), **sweep_tags(run), "data_source": str(run.get("data_source") or ""),
        "weights_kept": has_weights, "message": str(run.get("message") or ""), "problem": problem,
    }


def telemetry_figures(run: dict) -> dict:
    """The run's machine figures (core.runs.telemetry), None where unknown: runs from before they were recorded,
    GPU use of CPU runs. Memory in bytes, CPU % of one core (100 = one core busy), GPU % of the whole device."""
    figures = {}
    for key, kind in (("peak_rss_bytes", int), ("mean_cpu_percent", float), ("mean_gpu_percent", float)):
        value = run.get(key)
        figures[key] = kind(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return figures


def sweep_tags(run: dict) -> dict:
    """The sweep a run is a trial of and its trial number ('' and None for a run of its own, or an older file's)."""
    trial = run.get("trial")
    return {"sweep_id": str(run.get("sweep_id") or ""), "trial": trial if isinstance(trial, int) else None}


def _when(timestamp) -> str:
    try:
        return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def runs_table(store: Store) -> list[dict]:
    """Every stored run, newest first. Runs whose process died are marked interrupted first."""
    store.mark_orphans_interrupted()
    epochs = store.epochs_by_run()
    kept = store.checkpoint_times()
    return [summarize_run(run, epochs.get(run["id"], []), run["id"] in kept) for run in store.list_runs()]


def differing_fields(configs: list[dict]) -> list[str]:
    """Config fields whose values are not all the same across the given runs (in LEGEND_FIELDS order)."""
    if len(configs) < 2:
        return []
    return [name for name in LEGEND_FIELDS
            if len({repr(c.get(name)) for c in configs}) > 1]


def describe_field(config: dict, name: str) -> str:
    value = config.get(name)
    if name == "hidden_sizes":
        value = "-".join(str(h) for h in value)
    elif isinstance(value, float):
        value = f"{value:g}"
    return f"{LEGEND_FIELDS.get(name, name + ' ')}{value}"


def run_label(run: dict, fields: list[str]) -> str:
    """'a1b2c3 · hidden 64 · lr 0.1': the run's id and the settings that differ from the others shown."""
    config = dict(run["config"])
    parts = [run["id"][:6]]
    for name in fields:
        if name == "lr" and len(run.get("schedule") or []) > 1:
            parts.append(f"lr {schedule_text(run['schedule'])}")
        else:
            parts.append(describe_field(config, name))
    return " · ".join(parts)


def smooth(values: list[float | None], weight: float) -> list[float | None]:
    """Exponential moving average (TensorBoard-style, debiased), weight 0 = raw; None values pass through."""
    if not 0 <= weight < 1:
        raise ValueError("smoothing weight must be in [0, 1)")
    if weight == 0:
        return list(values)
    out, average, norm = [], 0.0, 0.0
    for value in values:
        if value is None:
            out.append(None)
            continue
        average = weight * average + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append(average / norm)
    return out


def overlay_series(runs: list[dict], epochs_by_run: dict[str, list[dict]], *, x: str = "epoch",
                   smoothing: float = 0.0) -> list[dict]:
    """Curves for each run: {run_id, label, x, val_loss, val_acc, train_loss}; x is 'epoch' or 'elapsed'."""
    if x not in ("epoch", "elapsed"):
        raise ValueError("x must be 'epoch' or 'elapsed'")
    fields = differing_fields([r["config"] for r in runs])
    series = []
    for run in runs:
        epochs = epochs_by_run.get(run["id"], [])
        series.append({
            "run_id": run["id"],
            "label": run_label(run, fields),
            "x": [e[x] for e in epochs],
            "val_loss": smooth([e["val_loss"] for e in epochs], smoothing),
            "val_acc": smooth([e["val_acc"] for e in epochs], smoothing),
            "train_loss": smooth([e["train_loss"] for e in epochs], smoothing),
        })
    return series


def rerun_phases(run: dict) -> list[tuple[int, float]]:
    """The (epochs, lr) phases a run was trained with, for re-running it with the same config."""
    schedule = run.get("schedule") or []
    if schedule:
        return [(int(e), float(lr)) for e, lr in schedule]
    config = RunConfig.from_dict(run["config"])
    return [(config.epochs, config.lr)]
