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


def loss_figure(frame: pd.DataFrame, planned_epochs: int, batch_losses=None) -> go.Figure:
    """Training and validation loss per epoch; with `batch_losses` ((position in epochs, mean loss) pairs, possibly
    none yet) a thin per-batch training-loss line under them, so a long epoch shows movement before it ends."""
    fig = go.Figure()
    if batch_losses is not None:
        fig.add_trace(go.Scatter(x=[p for p, _ in batch_losses], y=[v for _, v in batch_losses],
                                 name="train loss (per batch)", mode="lines", hoverinfo="skip",
                                 line=dict(color=COLORS["batch_loss"], width=1)))
    for column, name in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        fig.add_trace(go.Scatter(x=frame["epoch"].tolist(), y=frame[column].tolist(), name=name, mode="lines+markers",
                                 line=dict(color=COLORS[column], dash="dot" if column == "train_loss" else "solid")))
    layout = _base_layout("Loss (cross-entropy)", planned_epochs, "loss")
    values = [*frame["train_loss"].tolist(), *frame["val_loss"].tolist(), *(v for _, v in batch_losses or ())]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if finite:
        layout["yaxis"]["range"] = [0, max(finite) * 1.1]
    if batch_losses is not None:  # the per-batch line starts at the first batch, before epoch 1's point
        layout["xaxis"]["range"] = [0, max(planned_epochs, 1) + 0.5]
    fig.update_layout(**layout)
    return fig


def accuracy_figure(frame: pd.DataFrame, planned_epochs: int) -> go.Figure:
    acc = (frame["val_acc"] * 100).tolist()
    fig = go.Figure(go.Scatter(x=frame["epoch"].tolist(), y=acc, name="validation accuracy", mode="lines+markers",
                               line=dict(color=COLORS["val_acc"]),
                               hovertemplate="epoch %{x}: %{y:.2f} %<extra></extra>"))
    layout = _base_layout("Validation accuracy", planned_epochs, "accuracy (%)")
    low = min(acc) if acc else 80.0
    layout["yaxis"]["range"] = [max(0.0, math.floor(min(low, 90.0) / 5) * 5), 100.5]
    fig.update_layout(**layout)
    return fig
