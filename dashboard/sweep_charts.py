"""Pure figure builders for the Sweep page: a sweep's snapshot in, Plotly figures and a results table out."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from core.config import RunStatus
from core.studies.sweep_analysis import pareto_front

from .charts import CONFIG, HEIGHT  # noqa: F401  (CONFIG re-exported for the page)
from .compare_charts import PALETTE, log_axis

BEST_COLOR, PRUNED_COLOR, FAILED_COLOR, RUNNING_COLOR = "#2e9d5b", "#c3c8d2", "#e4572e", "#3b6fd8"
DEVICE_SYMBOLS = ("circle", "diamond", "square", "triangle-up")


def _layout(title: str, x_title: str, y_title: str, **extra) -> dict:
    layout = dict(title=dict(text=title, x=0.01, font=dict(size=15)), height=HEIGHT + 40,
                  margin=dict(l=60, r=15, t=45, b=50), xaxis=dict(title=x_title), yaxis=dict(title=y_title),
                  showlegend=False, uirevision="keep")
    layout.update(extra)
    return layout


def trial_device(trial) -> str:
    """'cpu', 'cuda', ... (what its epochs ran on; '' before its first epoch)."""
    return trial.epochs[-1].device.split(":")[0].strip().lower() if trial.epochs else ""


def params_text(params: dict) -> str:
    return ", ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in params.items())


def trial_style(trial, best_number: int | None) -> dict:
    """How a trial's curve looks: the best bold green, pruned grey and dotted, failed red, running blue."""
    if trial.number == best_number:
        return dict(color=BEST_COLOR, width=3.5, dash="solid")
    if trial.status == RunStatus.PRUNED:
        return dict(color=PRUNED_COLOR, width=1.2, dash="dot")
    if trial.status in (RunStatus.FAILED, RunStatus.DIVERGED):
        return dict(color=FAILED_COLOR, width=1.2, dash="dash")
    if trial.active:
        return dict(color=RUNNING_COLOR, width=2.2, dash="solid")
    return dict(color=PALETTE[trial.number % len(PALETTE)], width=1.5, dash="solid")


def trial_curves_figure(snap) -> go.Figure:
    """Every trial's validation accuracy per epoch, overlaid (one trace per trial that has started, in order)."""
    best = snap.best
    best_number = best.number if best else None
    fig = go.Figure()
    low = 90.0
    for trial in snap.trials:
        acc = [e.val_acc * 100 for e in trial.epochs]
        low = min([low, *acc])
        fig.add_trace(go.Scatter(
            x=[e.epoch for e in trial.epochs], y=acc, mode="lines+markers", name=f"trial {trial.number}",
            line=trial_style(trial, best_number), marker=dict(size=5),
            hovertemplate=f"trial {trial.number} ({trial.status})<br>{params_text(trial.params)}"
                          f"<br>epoch %{{x}}: %{{y:.2f}} %<extra></extra>"))
    epochs = snap.spec.epochs
    fig.update_layout(**_layout("Validation accuracy of every trial (best green, pruned grey)", "epoch",
                                "accuracy (%)"))
    fig.update_layout(xaxis=dict(title="epoch", range=[0.5, epochs + 0.5], dtick=max(1, math.ceil(epochs / 10))),
                      yaxis=dict(title="accuracy (%)", range=[max(0.0, math.floor(low / 5) * 5), 100.5]))
    return fig


def results_frame(snap) -> pd.DataFrame:
    """One row per trial: its result, its cost and its settings (the searched ones), best first."""
    searched = [d.name for d in snap.spec.space.searched]
    rows = []
    for t in snap.trials:
        device = trial_device(t)
        rows.append({"trial": t.number, "status": str(t.status),
                     "best val acc (%)": None if t.value is None else round(t.value * 100, 2),
                     "best epoch": t.best_epoch, "epochs": len(t.epochs),
                     "s / epoch": None if t.seconds_per_epoch is None else round(t.seconds_per_epoch, 3),
                     "total s": None if t.seconds is None else round(t.seconds, 1),
                     **{name: t.params.get(name) for name in searched}, "device": device, "run": t.run_id})
    columns = ["trial", "status", "best val acc (%)", "best epoch", "epochs", "s / epoch", "total s", *searched,
               "device", "run"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["best val acc (%)", "trial"], ascending=[False, True], na_position="last",
                             ignore_index=True)


def cost_figure(snap) -> go.Figure:
    """Best validation accuracy against seconds per epoch, one marker per trial (a symbol per device when trials
    ran on several), the Pareto front joined: what each setting costs for what it reaches."""
    done = [t for t in snap.trials if t.value is not None and t.seconds_per_epoch is not None]
    devices = sorted({trial_device(t) for t in done})
    fig = go.Figure()
    points = [(t.seconds_per_epoch, t.value * 100) for t in done]
    front = pareto_front(points)
    if front:
        fig.add_trace(go.Scatter(x=[points[i][0] for i in front], y=[points[i][1] for i in front], mode="lines",
                                 name="Pareto front", line=dict(color=BEST_COLOR, width=1.5, dash="dash"),
                                 hoverinfo="skip"))
    for k, device in enumerate(devices):
        mine = [i for i, t in enumerate(done) if trial_device(t) == device]
        fig.add_trace(go.Scatter(
            x=[points[i][0] for i in mine], y=[points[i][1] for i in mine], mode="markers", name=device,
            marker=dict(size=[13 if i in front else 9 for i in mine], symbol=DEVICE_SYMBOLS[k % len(DEVICE_SYMBOLS)],
                        color=[PRUNED_COLOR if done[i].status == RunStatus.PRUNED else
                               BEST_COLOR if i in front else RUNNING_COLOR for i in mine],
                        line=dict(width=1, color="#444")),
            text=[f"trial {done[i].number} ({done[i].status}) on {device}<br>{params_text(done[i].params)}"
                  for i in mine],
            hovertemplate="%{text}<br>%{x:.3f} s/epoch: %{y:.2f} %<extra></extra>"))
    seconds = [p[0] for p in points] or [0.1, 1.0]
    low = min([90.0, *(p[1] for p in points)])
    fig.update_layout(**_layout("What each setting costs: best accuracy against seconds per epoch",
                                "seconds per epoch", "best val accuracy (%)", showlegend=len(devices) > 1))
    fig.update_layout(xaxis=log_axis(min(seconds), max(seconds), "seconds per epoch (log)"),
                      yaxis=dict(title="best val accuracy (%)", range=[max(0.0, math.floor(low / 5) * 5), 100.5]))
    return fig


def parallel_coordinates_figure(snap) -> go.Figure:
    """One line per trial with a result across its searched settings and its accuracy, coloured by accuracy. A log
    range is drawn on a log10 axis labelled in its own units; choices become evenly spaced labelled values."""
    done = [t for t in snap.trials if t.value is not None]
    dimensions = []
    for dim in snap.spec.space.searched:
        values = [t.params.get(dim.name) for t in done]
        if dim.choices and not all(isinstance(c, (int, float)) for c in dim.choices):
            codes = {c: i for i, c in enumerate(dim.choices)}
            dimensions.append(dict(label=dim.name, values=[codes.get(v, 0) for v in values],
                                   tickvals=list(codes.values()), ticktext=[str(c) for c in codes],
                                   range=[-0.2, len(codes) - 0.8]))
        elif dim.log:
            ticks = log_axis(dim.low, dim.high, "")
            shown = [t for t in ticks["tickvals"] if dim.low <= t <= dim.high] or [dim.low, dim.high]
            dimensions.append(dict(label=f"{dim.name} (log)", values=[math.log10(v) for v in values],
                                   range=[math.log10(dim.low), math.log10(dim.high)],
                                   tickvals=[math.log10(t) for t in shown], ticktext=[f"{t:g}" for t in shown]))
        else:
            low = dim.low if dim.low is not None else min(dim.choices)
            high = dim.high if dim.high is not None else max(dim.choices)
            axis = dict(label=dim.name, values=values, range=[low, high])
            if isinstance(low, int) and high - low <= 10:  # layers 1..3: whole numbers only
                axis.update(tickvals=list(range(low, high + 1)), ticktext=[str(v) for v in range(low, high + 1)])
            dimensions.append(axis)
    acc = [t.value * 100 for t in done]
    dimensions.append(dict(label="best val acc (%)", values=acc,
                           range=[min(acc, default=0.0), max(acc, default=100.0)]))
    fig = go.Figure(go.Parcoords(line=dict(color=acc, colorscale="Viridis", showscale=True,
                                           colorbar=dict(title="acc %")), dimensions=dimensions,
                                 unselected=dict(line=dict(opacity=0.15))))
    fig.update_layout(title=dict(text="Settings against accuracy (drag along an axis to filter)", x=0.01,
                                 font=dict(size=15)), height=HEIGHT + 40, margin=dict(l=70, r=40, t=80, b=30),
                      uirevision="keep")
    return fig


def importance_figure(importances: dict[str, float]) -> go.Figure:
    names = list(importances)[::-1]  # most important on top
    fig = go.Figure(go.Bar(x=[importances[n] * 100 for n in names], y=names, orientation="h",
                           marker_color=RUNNING_COLOR, hovertemplate="%{y}: %{x:.0f} %<extra></extra>"))
    fig.update_layout(**_layout("Which settings mattered (Optuna's PED-ANOVA importance)", "share of the effect (%)",
                                "", height=max(180, 60 + 40 * len(names))))
    return fig
