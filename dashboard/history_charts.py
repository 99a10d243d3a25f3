"""Pure figure builders for the History page: overlays, confusion matrix, per-class accuracy (no Streamlit)."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from . import charts  # noqa: F401 (the app's chart theme is set there)

HEIGHT = 360  # px
CONFIG = {"displayModeBar": False}
PALETTE = ("#3b6fd8", "#e0703a", "#2e9d5b", "#a24cc2", "#c9a227", "#1aa3a3", "#d6456b", "#6b7a8f",
           "#8c564b", "#17becf")
X_TITLES = {"epoch": "epoch", "elapsed": "wall seconds of training"}


def _layout(title: str, x_title: str, y_title: str) -> dict:
    return dict(title=dict(text=title, x=0.01, font=dict(size=15)), height=HEIGHT,
                margin=dict(l=55, r=15, t=45, b=45),
                xaxis=dict(title=x_title), yaxis=dict(title=y_title),
                legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
                uirevision="keep")


def overlay_figure(series: list[dict], metric: str, *, x: str = "epoch", log_y: bool = False) -> go.Figure:
    """One line per run; metric is 'val_loss', 'val_acc' (drawn in %) or 'train_loss'."""
    percent = metric == "val_acc"
    titles = {"val_loss": "Validation loss", "val_acc": "Validation accuracy", "train_loss": "Training loss"}
    fig = go.Figure()
    for i, s in enumerate(series):
        y = [None if v is None else v * 100 for v in s[metric]] if percent else s[metric]
        fig.add_trace(go.Scatter(
            x=s["x"], y=y, name=s["label"], mode="lines+markers" if len(s["x"]) < 40 else "lines",
            line=dict(color=PALETTE[i % len(PALETTE)]),
            hovertemplate=f"{s['label']}<br>{X_TITLES[x]} %{{x:.4g}}: %{{y:.4g}}{' %' if percent else ''}"
                          f"<extra></extra>"))
    layout = _layout(titles[metric], X_TITLES[x], "accuracy (%)" if percent else "loss (cross-entropy)")
    if x == "epoch":  # whole epochs only
        last = max((max(s["x"]) for s in series if s["x"]), default=1)
        layout["xaxis"].update(dtick=max(1, math.ceil(last / 10)), tick0=1)
    # Legends of many runs take room below the plot: grow the figure instead of squeezing the plot.
    layout["height"] = HEIGHT + 22 * max(0, len(series) - 2)
    if log_y and not percent:
        # Plotly's own log labels at a small span read "1, 9, 8 ... 3" (minor ticks as single digits).
        losses = [v for s in series for v in s[metric] if v is not None and v > 0]
        if losses:
            layout["yaxis"] = loss_log_axis(min(losses), max(losses))
    fig.update_layout(**layout)
    return fig


LOG_TICK_STEPS = ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 8), (1, 1.2, 1.4, 1.6, 1.8, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9))


def loss_log_axis(low: float, high: float) -> dict:
    """A log axis whose labels are whole numbers (0.1, 0.2, 0.5, 1 ...), finer where the losses span little.

    Plotly's own labels between decades are bare digits ("1, 9, 8 ... 3"), which read as nonsense for losses.
    The coarsest steps that put at least three labels among the data are used.
    """
    for steps in LOG_TICK_STEPS:
        ticks = [round(m * 10.0 ** e, 12) for e in range(-6, 5) for m in steps]
        if sum(low <= t <= high for t in ticks) >= 3:
            break
    shown = [t for t in ticks if low / 1.6 <= t <= high * 1.6]
    return dict(type="log", title="loss (cross-entropy, log scale)", tickvals=shown,
                ticktext=[f"{t:g}" for t in shown])


def confusion_figure(confusion: np.ndarray, classes: tuple[str, ...], normalize: bool = False) -> go.Figure:
    """Heatmap: rows are true classes, columns predictions; normalize=True shows each row as % of its class."""
    counts = np.asarray(confusion, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts * 100.0, totals, out=np.zeros(counts.shape), where=totals > 0)
    z = shares if normalize else counts
    text = [[f"{shares[i, j]:.1f}%" if normalize else str(counts[i, j]) for j in range(len(classes))]
            for i in range(len(classes))]
    fig = go.Figure(go.Heatmap(
        z=z.tolist(), x=list(classes), y=list(classes), text=text, texttemplate="%{text}",
        colorscale="Blues", showscale=False,
        customdata=counts.tolist(),
        hovertemplate="true %{y}, predicted %{x}: %{customdata} images<extra></extra>"))
    size = max(380, 40 * len(classes) + 140)
    fig.update_layout(title=dict(text="Confusion matrix (test split)", x=0.01, font=dict(size=15)),
                      height=size, margin=dict(l=90, r=15, t=45, b=90),
                      xaxis=dict(title="predicted", side="bottom", tickangle=-35 if len(max(classes, key=len)) > 2
                                 else 0),
                      yaxis=dict(title="true", autorange="reversed"))
    return fig


def per_class_figure(accuracy: list[float | None], classes: tuple[str, ...]) -> go.Figure:
    values = [None if a is None else a * 100 for a in accuracy]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    fig = go.Figure(go.Bar(x=list(classes), y=values, marker_color="#3b6fd8",
                           text=[f"{v:.1f}%" if v is not None else "–" for v in values], textposition="outside",
                           hovertemplate="%{x}: %{y:.2f} %<extra></extra>"))
    low = min(finite) if finite else 0.0
    fig.update_layout(title=dict(text="Accuracy per class (test split)", x=0.01, font=dict(size=15)),
                      height=HEIGHT, margin=dict(l=55, r=15, t=45, b=70),
                      yaxis=dict(title="accuracy (%)", range=[max(0.0, math.floor(low / 10) * 10 - 10), 105]),
                      xaxis=dict(title="true class"))
    return fig
