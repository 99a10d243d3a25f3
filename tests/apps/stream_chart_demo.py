"""A page with two streaming charts, for tests/test_browser_stream_chart.py (run it with `streamlit run`).

Query parameters: series (the run drawn; "New run" moves to the next), every (seconds between updates), epochs (how
many points the epoch chart gets in all), batches (points the per-batch chart gets per update), max_points (its
bound). The points come from a clock kept per series for the whole server process, so a reload sees what is
there so far and then follows the same series.
"""
from __future__ import annotations

import math
import time

import streamlit as st

from dashboard import charts
from dashboard.stream_chart import stream_chart

params = st.query_params
EVERY = float(params.get("every", 0.3))
EPOCHS = int(params.get("epochs", 60))
BATCHES = int(params.get("batches", 25))
MAX_POINTS = int(params.get("max_points", 400))
series = params.get("series", "run-1")


@st.cache_resource
def clocks() -> dict[str, float]:
    return {}  # series -> when its first point appeared


def epochs_so_far(now: float) -> int:
    start = clocks().setdefault(series, now)
    return min(EPOCHS, 1 + int((now - start) / EVERY))


def epoch_rows(n: int) -> list[dict]:
    rows = []
    for i in range(1, n + 1):
        train = 2.0 / i + 0.05 * math.sin(i)
        rows.append(dict(epoch=i, phase="train", lr=0.1, train_loss=train, val_loss=train * 1.1, val_acc=1 - train / 3,
                         seconds=0.3, samples_per_s=1e5, warmup=i == 1, elapsed=0.3 * i))
    return rows


def batch_figure(n: int) -> dict:
    steps = list(range(n * BATCHES))
    return {"data": [{"type": "scatter", "mode": "lines", "name": "batch loss", "x": steps,
                      "y": [2.0 / (1 + s / BATCHES) + 0.1 * math.sin(s) for s in steps]}],
            "layout": {"height": 260, "margin": {"l": 50, "r": 10, "t": 30, "b": 40}, "uirevision": "keep",
                       "title": {"text": "Per-batch loss"}, "xaxis": {"title": "batch"}}}


def next_run() -> None:
    number = int(series.rsplit("-", 1)[-1]) + 1 if series.rsplit("-", 1)[-1].isdigit() else 2
    st.query_params["series"] = f"run-{number}"


st.button("New run", key="new_run", on_click=next_run)
show = st.toggle("Show the charts", value=True, key="show")  # off and on again: new elements, same session


@st.fragment(run_every=EVERY)
def live() -> None:
    n = epochs_so_far(time.monotonic())
    if not show:
        st.caption(f"epochs {n}; charts hidden")
        return
    figure = charts.loss_figure(charts.epochs_frame(epoch_rows(n)), EPOCHS)
    figure.update_layout(title_text=f"Loss (block {n // 10})")  # a layout change every tenth epoch
    sent = stream_chart(figure, key="loss", series=series, config=charts.CONFIG)
    stream_chart(batch_figure(n), key="batches", series=series, config=charts.CONFIG, max_points=MAX_POINTS)
    st.caption(f"epochs {n}; message version {sent['v']}{' (whole figure)' if 'reset' in sent else ''}")


live()
