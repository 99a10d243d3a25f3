"""Pure figure builders: pandas DataFrame of epochs in, Plotly figure out (no Streamlit here)."""
from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

HEIGHT = 320  # px, fixed so live updates never change the layout
CONFIG = {"displayModeBar": False}
# One theme for every chart of the app (the compare and history builders import this module). As the default it is
# applied when a figure is made, 1.5 ms; `template=` in update_layout deep-copies it, 8 ms per figure, and the live
# panel builds its figures again on every poll.
TEMPLATE = "plotly_white"
pio.templates.default = TEMPLATE
COLORS = {"train_loss": "#9aa9c7", "val_loss": "#3b6fd8", "val_acc": "#2e9d5b", "batch_loss": "#c9d2e3"}


def epochs_frame(epochs) -> pd.DataFrame:
    """EpochResult records (or dicts) -> one row per epoch."""
    rows = [e if isinstance(e, dict) else e.to_dict() for e in epochs]
    columns = ["epoch", "phase", "lr", "train_loss", "val_loss", "val_acc", "seconds", "samples_per_s",
               "warmup", "elapsed"]
    frame = pd.DataFrame(rows)
    return frame[columns] if len(frame) else pd.DataFrame(columns=columns)


def _base_layout(title: str, planned_epochs: int, y_title: str) -> dict:
    return dict(
        title=dict(text=title, x=0.01, font=dict(size=15)),
        height=HEIGHT,
        margin=dict(l=55, r=15, t=45, b=45),
        xaxis=dict(title="epoch", range=[0.5, max(planned_epochs, 1) + 0.5], dtick=_tick(planned_epochs)),
        yaxis=dict(title=y_title),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
        uirevision="keep",  # keep the user's zoom across updates
    )


def _tick(planned_epochs: int) -> int:
    return max(1, math.ceil(planned_epochs / 10))


def column(epochs, name: str) -> list:
    """One column of the epochs: a DataFrame's (epochs_frame) or a sequence of EpochResult records' (or dicts')."""
    if isinstance(epochs, pd.DataFrame):
        return epochs[name].tolist()
    return [e[name] if isinstance(e, dict) else getattr(e, name) for e in epochs]


def loss_points(epochs, batch_losses=None) -> list[tuple[list, list]]:
    """(x, y) per trace of loss_figure, in its order: the per-batch line (when `batch_losses` is given), then training
    and validation loss per epoch. The live feed (live_feed.py) sends the same points the figure holds."""
    points = [([p for p, _ in batch_losses], [v for _, v in batch_losses])] if batch_losses is not None else []
    x = column(epochs, "epoch")
    return points + [(x, column(epochs, "train_loss")), (x, column(epochs, "val_loss"))]


def loss_range(points: list[tuple[list, list]]) -> list[float] | None:
    """The loss axis: 0 to 10 % above the highest finite loss drawn (None before there is one)."""
    finite = [v for _, ys in points for v in ys if v is not None and math.isfinite(v)]
    return [0, max(finite) * 1.1] if finite else None


def accuracy_points(epochs) -> list[tuple[list, list]]:
    """(x, y) of accuracy_figure's one trace: validation accuracy in percent per epoch."""
    return [(column(epochs, "epoch"), [v * 100 for v in column(epochs, "val_acc")])]


def accuracy_range(points: list[tuple[list, list]]) -> list[float]:
    acc = points[0][1]
    low = min(acc) if acc else 80.0
    return [max(0.0, math.floor(min(low, 90.0) / 5) * 5), 100.5]


def loss_figure(frame: pd.DataFrame, planned_epochs: int, batch_losses=None) -> go.Figure:
    """Training and validation loss per epoch; with `batch_losses` ((position in epochs, mean loss) pairs, possibly
    none yet) a thin per-batch training-loss line under them, so a long epoch shows movement before it ends."""
    points = loss_points(frame, batch_losses)
    fig = go.Figure()
    if batch_losses is not None:
        x, y = points[0]
        fig.add_trace(go.Scatter(x=x, y=y, name="train loss (per batch)", mode="lines", hoverinfo="skip",
                                 line=dict(color=COLORS["batch_loss"], width=1)))
    for (x, y), (key, name) in zip(points[-2:], (("train_loss", "train loss"), ("val_loss", "validation loss"))):
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers",
                                 line=dict(color=COLORS[key], dash="dot" if key == "train_loss" else "solid")))
    layout = _base_layout("Loss (cross-entropy)", planned_epochs, "loss")
    y_range = loss_range(points)
    if y_range:
        layout["yaxis"]["range"] = y_range
    if batch_losses is not None:  # the per-batch line starts at the first batch, before epoch 1's point
        layout["xaxis"]["range"] = [0, max(planned_epochs, 1) + 0.5]
    fig.update_layout(**layout)
    return fig


def accuracy_figure(frame: pd.DataFrame, planned_epochs: int) -> go.Figure:
    points = accuracy_points(frame)
    x, acc = points[0]
    fig = go.Figure(go.Scatter(x=x, y=acc, name="validation accuracy", mode="lines+markers",
                               line=dict(color=COLORS["val_acc"]),
                               hovertemplate="epoch %{x}: %{y:.2f} %<extra></extra>"))
    layout = _base_layout("Validation accuracy", planned_epochs, "accuracy (%)")
    layout["yaxis"]["range"] = accuracy_range(points)
    fig.update_layout(**layout)
    return fig
