"""Pure figure builders for the Compare page: legs' epochs and speedup maps in, Plotly figures out."""
from __future__ import annotations

import math

import plotly.graph_objects as go

from .charts import CONFIG, HEIGHT, epochs_frame  # noqa: F401  (CONFIG re-exported for the page)

PALETTE = ("#3b6fd8", "#e4572e", "#2e9d5b", "#8e5ad8", "#f0a202", "#17becf", "#7f7f7f", "#bcbd22")
SPEEDUP_TICKS = (0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


def leg_name(index: int, label: str) -> str:
    return f"{index + 1}. {label}"


def series(leg_runs, waiting=()) -> list[tuple[str, str, object]]:
    """[(legend name, colour, epochs DataFrame)] for core.studies.compare.LegRun records, then an empty one for each
    Leg in `waiting` (not started yet). The page streams its charts (dashboard/stream_chart.py), where new epochs
    travel as appended points but a trace added later resends the whole figure: a running comparison's charts hold
    every leg's trace from the start, and a leg's epochs only ever append."""
    named = [(run.leg, epochs_frame(run.epochs)) for run in leg_runs]
    named += [(leg, epochs_frame(())) for leg in waiting]
    return [(leg_name(i, leg.label()), PALETTE[i % len(PALETTE)], frame) for i, (leg, frame) in enumerate(named)]


def _layout(title: str, x_title: str, y_title: str, **extra) -> dict:
    layout = dict(title=dict(text=title, x=0.01, font=dict(size=15)), height=HEIGHT + 40,
                  margin=dict(l=60, r=15, t=45, b=85), xaxis=dict(title=x_title), yaxis=dict(title=y_title),
                  legend=dict(orientation="h", yanchor="top", y=-0.24, xanchor="left", x=0),
                  uirevision="keep")
    layout.update(extra)
    return layout


def log_axis(low: float, high: float, title: str) -> dict:
    """A log axis labelled 1-2-5 (plotly's own log labels run together at small spans)."""
    ticks = [m * 10.0 ** e for e in range(-4, 5) for m in (1, 2, 5)]
    shown = [t for t in ticks if low / 2 <= t <= high * 2] or ticks
    return dict(type="log", title=title, tickvals=shown, ticktext=[f"{t:g}" for t in shown])


def _epoch_axis(planned_epochs: int) -> dict:
    return dict(title="epoch", range=[0.5, max(planned_epochs, 1) + 0.5], dtick=max(1, math.ceil(planned_epochs / 10)))


def val_acc_figure(legs, planned_epochs: int) -> go.Figure:
    fig = go.Figure()
    low = 90.0
    for i, (name, color, frame) in enumerate(legs):
        acc = (frame["val_acc"] * 100).tolist()
        low = min([low, *acc])
        fig.add_trace(go.Scatter(x=frame["epoch"].tolist(), y=acc, name=name, mode="lines+markers",
                                 line=dict(color=color, dash="solid" if i == 0 else "dash"),
                                 marker=dict(size=7 - i % 3),
                                 hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.2f}} %<extra></extra>"))
    fig.update_layout(**_layout("Validation accuracy per epoch", "epoch", "accuracy (%)"))
    fig.update_layout(xaxis=_epoch_axis(planned_epochs), yaxis=dict(range=[max(0.0, math.floor(low / 5) * 5), 100.5]))
    return fig


def val_loss_figure(legs, planned_epochs: int) -> go.Figure:
    fig = go.Figure()
    top = 0.0
    for i, (name, color, frame) in enumerate(legs):
        loss = frame["val_loss"].tolist()
        top = max([top, *[v for v in loss if math.isfinite(v)]])
        fig.add_trace(go.Scatter(x=frame["epoch"].tolist(), y=loss, name=name, mode="lines+markers",
                                 line=dict(color=color, dash="solid" if i == 0 else "dash"),
                                 marker=dict(size=7 - i % 3),
                                 hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.5f}}<extra></extra>"))
    fig.update_layout(**_layout("Validation loss per epoch (same start; float drift may part the curves)", "epoch",
                                "cross-entropy"))
    fig.update_layout(xaxis=_epoch_axis(planned_epochs), yaxis=dict(range=[0, (top or 1.0) * 1.1]))
    return fig


def acc_vs_time_figure(legs) -> go.Figure:
    """Validation accuracy against training wall clock: the chart that shows speed."""
    fig = go.Figure()
    right, low = 0.0, 90.0
    for name, color, frame in legs:
        elapsed, acc = frame["elapsed"].tolist(), (frame["val_acc"] * 100).tolist()
        right, low = max([right, *elapsed]), min([low, *acc])
        fig.add_trace(go.Scatter(x=elapsed, y=acc, name=name, mode="lines+markers", line=dict(color=color),
                                 hovertemplate=f"{name}<br>%{{x:.2f}} s: %{{y:.2f}} %<extra></extra>"))
    log = _spread(legs) > 20  # one leg 20x faster: a linear axis would squash it against zero
    title = "training wall clock (s, warm-up epoch included)"
    if log:
        lefts = [frame["elapsed"].iloc[0] for _, _, frame in legs if len(frame)]
        xaxis = log_axis(min(lefts), right, title + ", log scale")
    else:
        xaxis = dict(title=title, range=[0, right * 1.05] if right else None)
    fig.update_layout(**_layout("Validation accuracy against seconds", "", "accuracy (%)"))
    fig.update_layout(xaxis=xaxis, yaxis=dict(range=[max(0.0, math.floor(low / 5) * 5), 100.5]))
    return fig


def _spread(legs) -> float:
    finals = [frame["elapsed"].iloc[-1] for _, _, frame in legs if len(frame)]
    return max(finals) / max(min(finals), 1e-9) if finals else 1.0


def epoch_time_figure(legs) -> go.Figure:
    """Bars of every epoch's seconds per leg; the warm-up epoch is hatched (it is never averaged in)."""
    fig = go.Figure()
    top, bottom = 0.0, math.inf
    for name, color, frame in legs:
        seconds = frame["seconds"].tolist()
        warm = frame["warmup"].tolist()
        if seconds:
            top, bottom = max(top, *seconds), min(bottom, *seconds)
        fig.add_trace(go.Bar(x=frame["epoch"].tolist(), y=seconds, name=name, marker=dict(
            color=color, pattern=dict(shape=["/" if w else "" for w in warm], fillmode="replace")),
            customdata=["warm-up, excluded from the median" if w else "timed" for w in warm],
            hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.3f}} s (%{{customdata}})<extra></extra>"))
    log = bottom < math.inf and top / max(bottom, 1e-9) > 20
    fig.update_layout(**_layout("Epoch time per leg (hatched: warm-up epoch)", "epoch", "seconds", barmode="group"))
    if log:
        fig.update_layout(yaxis=log_axis(bottom, top, "seconds (log scale)"))
    return fig


# -- speedup map ------------------------------------------------------------------------------------
def _rows(result: dict) -> list[tuple[int, int]]:
    grid = result["grid"]
    return [(layers, hidden) for layers in grid["layers"] for hidden in grid["hidden_sizes"]]


def _row_label(layers: int, hidden: int) -> str:
    return f"{layers} x {hidden}"


def _hover_lines(cell: dict, legs: list[dict]) -> str:
    lines = [f"hidden {cell['hidden']} x {cell['layers']} layer(s), batch {cell['batch']}, "
             f"{cell['gflop_per_step']:.3g} GFLOP/step"]
    for leg, timing in zip(legs, cell["legs"]):
        lines.append(f"{leg['label']}: {timing['step_ms']:.3f} ms/step, {timing['samples_per_s']:,.0f} samples/s, "
                     f"{timing['floor_ratio']:.1f}x its FLOP floor")
    return "<br>".join(lines)


def _grid_values(result: dict, value) -> tuple[list[str], list[str], list[list], list[list]]:
    """(x labels, y labels, z rows, hover rows); cells not measured yet are None."""
    batches = result["grid"]["batch_sizes"]
    rows = _rows(result)
    cells = {(c["layers"], c["hidden"], c["batch"]): c for c in result["cells"]}
    z, hover = [], []
    for layers, hidden in rows:
        z_row, h_row = [], []
        for batch in batches:
            cell = cells.get((layers, hidden, batch))
            z_row.append(value(cell) if cell else None)
            h_row.append(_hover_lines(cell, result["legs"]) if cell else "not measured")
        z.append(z_row)
        hover.append(h_row)
    return [str(b) for b in batches], [_row_label(*r) for r in rows], z, hover


def speedup_heatmap(result: dict, leg: int = 1) -> go.Figure:
    """Speedup of leg `leg` over the first leg per cell, on a log colour scale centred on 1x."""
    x, y, z, hover = _grid_values(result, lambda c: c["speedup"][leg])
    log_z = [[math.log2(v) if v else None for v in row] for row in z]
    text = [[f"{v:.2f}x" if v else "" for v in row] for row in z]
    finite = [abs(v) for row in log_z for v in row if v is not None]
    span = max([1.0, *finite])
    ticks = [t for t in SPEEDUP_TICKS if abs(math.log2(t)) <= span + 0.5]
    legs = result["legs"]
    title = f"Speedup: {legs[leg]['label']} over {legs[0]['label']}" if len(legs) > leg else "Speedup"
    fig = go.Figure(go.Heatmap(
        x=x, y=y, z=log_z, text=text, texttemplate="%{text}", customdata=hover, zmid=0, zmin=-span, zmax=span,
        colorscale="RdBu", hovertemplate="%{customdata}<extra></extra>",
        colorbar=dict(title="speedup", tickvals=[math.log2(t) for t in ticks], ticktext=[f"{t:g}x" for t in ticks])))
    fig.update_layout(**_layout(title, "batch size", "hidden layers x hidden size"))
    fig.update_layout(xaxis=dict(type="category", title="batch size"), yaxis=dict(type="category"),
                      height=max(HEIGHT, 60 + 36 * len(y)))
    return fig


def throughput_heatmap(result: dict, leg: int = 0) -> go.Figure:
    """Training samples per second of one leg per cell (log colour scale)."""
    x, y, z, hover = _grid_values(result, lambda c: c["legs"][leg]["samples_per_s"])
    log_z = [[math.log10(v) if v else None for v in row] for row in z]
    text = [[_short(v) if v else "" for v in row] for row in z]
    label = result["legs"][leg]["label"] if len(result["legs"]) > leg else f"leg {leg + 1}"
    fig = go.Figure(go.Heatmap(
        x=x, y=y, z=log_z, text=text, texttemplate="%{text}", customdata=hover, colorscale="Viridis",
        hovertemplate="%{customdata}<extra></extra>",
        colorbar=dict(title="samples/s", tickvals=list(range(2, 9)), ticktext=[_short(10 ** p) for p in range(2, 9)])))
    fig.update_layout(**_layout(f"Samples/s: {label}", "batch size", "hidden layers x hidden size"))
    fig.update_layout(xaxis=dict(type="category", title="batch size"), yaxis=dict(type="category"),
                      height=max(HEIGHT, 60 + 36 * len(y)))
    return fig


def _short(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"
