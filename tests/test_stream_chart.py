"""The streaming chart's delta logic (dashboard/stream_chart.py), without a browser.

`Replica` does with each message what stream_chart.js does in the browser, so the tests check what a client ends up
holding: the whole series after any sequence of messages it was handed, or a request for the whole figure.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts, compare_charts
from dashboard.stream_chart import (SeriesTracker, drawn_figure, figure_dict, point_counts, split_trace,
                                    thin_indices)


class Replica:
    """stream_chart.js's rules in Python: apply a reset, or the chunks newer than what it holds, else ask."""

    def __init__(self):
        self.series = self.tracker = self.v = self.data = self.layout = None
        self.points, self.max_points, self.asked, self.resets, self.waiting = [], None, 0, 0, False
        self.total, self.source = [], []  # per trace: the series' length; the position in it of each point shown

    def receive(self, message: dict) -> None:
        same = self.v is not None and self.series == message["series"] and self.tracker == message["t"]
        if same and self.v >= message["v"]:
            return
        if "reset" in message:
            self.data = copy.deepcopy(message["reset"]["data"])
            self.layout = copy.deepcopy(message["reset"]["layout"])
            self.points, self.max_points = message["points"], message["max_points"]
            self.total = list(message["counts"])
            self.source = [thin_indices(n, self.max_points) for n in self.total]
            self.series, self.tracker, self.v = message["series"], message["t"], message["v"]
            self.resets, self.waiting = self.resets + 1, False
            return
        if same and self.v >= message["since"]:
            for version, change in message["chunks"]:
                if version > self.v:
                    self._apply(change)
                    self.v = version
            self.v = message["v"]
            return
        if not self.waiting:  # asks once until the whole figure comes
            self.asked, self.waiting = self.asked + 1, True

    def _apply(self, change: dict) -> None:
        for index, arrays in change.get("extend", {}).items():
            i = int(index)
            trace = self.data[i]
            for path, values in arrays.items():
                _nested(trace, path).extend(values)
            added = len(next(iter(arrays.values())))
            self.source[i] += range(self.total[i], self.total[i] + added)
            self.total[i] += added
            if self.max_points and len(self.source[i]) > self.max_points:
                wanted = set(thin_indices(self.total[i], self.max_points))
                positions = [p for p, s in enumerate(self.source[i]) if s in wanted]
                for path in self.points[i]:
                    values = _nested(trace, path)
                    values[:] = [values[p] for p in positions]
                self.source[i] = [self.source[i][p] for p in positions]
        self.layout.update(change.get("layout", {}))
        for name in change.get("layout_drop", []):
            self.layout.pop(name)

    def ys(self) -> list[list]:
        return [t["y"] for t in self.data]


def _nested(trace: dict, path: str) -> list:
    node = trace
    for name in path.split("."):
        node = node[name]
    return node


def epoch_rows(n: int, spike_at: int | None = None) -> list[dict]:
    rows = []
    for i in range(1, n + 1):
        loss = 2.0 / i + (3.0 if i == spike_at else 0.0)
        rows.append(dict(epoch=i, phase="train", lr=0.1, train_loss=loss, val_loss=loss * 1.1, val_acc=0.9,
                         seconds=0.5, samples_per_s=1e5, warmup=i == 1, elapsed=0.5 * i))
    return rows


def loss_figure(n: int, **kw) -> dict:
    return figure_dict(charts.loss_figure(charts.epochs_frame(epoch_rows(n, **kw)), 50))


def line(n: int, color: str = "#3b6fd8", **layout) -> dict:
    return {"data": [{"type": "scatter", "x": list(range(n)), "y": [i * 0.5 for i in range(n)],
                      "line": {"color": color}}], "layout": {"height": 300, "uirevision": "keep", **layout}}


def test_the_first_message_is_the_whole_figure():
    message = SeriesTracker().update(loss_figure(5), "run-1")
    assert message["reset"]["data"][0]["x"] == [1, 2, 3, 4, 5]
    assert point_counts(message) == {0: 5, 1: 5}
    assert message["points"] == [["x", "y"], ["x", "y"]]
    json.dumps(message, allow_nan=False)  # plain JSON: the browser parses it


def test_a_grown_figure_sends_only_the_appended_points():
    tracker = SeriesTracker()
    tracker.update(loss_figure(3), "run-1")
    message = tracker.update(loss_figure(5), "run-1")
    assert "reset" not in message
    version, change = message["chunks"][-1]
    assert version == message["v"] == 2 and message["since"] == 1
    assert change["extend"]["0"]["x"] == [4, 5] and change["extend"]["1"]["x"] == [4, 5]
    assert change["extend"]["1"]["y"] == pytest.approx([2.2 / 4, 2.2 / 5])
    assert "layout" not in change  # the same axes and title: no layout goes with the points


def test_an_unchanged_figure_sends_the_same_message_again():
    tracker = SeriesTracker()
    tracker.update(loss_figure(3), "run-1")
    first = tracker.update(loss_figure(4), "run-1")
    assert tracker.update(loss_figure(4), "run-1") == first  # Streamlit sees the same data: nothing to hand over


def test_a_client_handed_every_message_holds_the_whole_series():
    tracker, client = SeriesTracker(), Replica()
    for n in range(1, 30):
        client.receive(tracker.update(loss_figure(n), "run-1"))
    assert client.ys() == [t["y"] for t in loss_figure(29)["data"]]
    assert client.resets == 1 and client.asked == 0


def test_a_client_that_skipped_messages_catches_up_from_the_window():
    tracker, client = SeriesTracker(window=6), Replica()
    messages = [tracker.update(loss_figure(n), "run-1") for n in range(1, 12)]
    for message in messages[:3] + messages[8:]:  # five messages never handed over (a busy page)
        client.receive(message)
    assert client.ys() == [t["y"] for t in loss_figure(11)["data"]]
    assert client.asked == 0


def test_a_client_too_far_behind_asks_and_the_next_message_is_whole():
    tracker, client = SeriesTracker(window=3), Replica()
    messages = [tracker.update(loss_figure(n), "run-1") for n in range(1, 12)]
    client.receive(messages[0])
    client.receive(messages[-1])  # missed more than the window holds
    assert client.asked == 1 and client.ys()[0] == [2.0]
    tracker.forget()  # what the component's "reset" trigger does
    client.receive(tracker.update(loss_figure(12), "run-1"))
    assert client.ys() == [t["y"] for t in loss_figure(12)["data"]] and client.resets == 2


def test_a_new_element_in_the_same_session_asks_for_the_whole_figure():
    """A page shown again in the same session: the tracker thinks the browser has points, the new element has none."""
    tracker = SeriesTracker()
    for n in range(1, 6):
        tracker.update(loss_figure(n), "run-1")
    fresh = Replica()
    fresh.receive(tracker.update(loss_figure(6), "run-1"))
    fresh.receive(tracker.update(loss_figure(6), "run-1"))
    assert fresh.asked == 1 and fresh.data is None


def test_a_new_tracker_for_a_live_element_redraws_it():
    """Session state cleared under a chart that stays on the page: the new tracker's versions start again at 1."""
    client, old = Replica(), SeriesTracker()
    for n in range(1, 9):
        client.receive(old.update(loss_figure(n), "run-1"))
    new = SeriesTracker()
    client.receive(new.update(loss_figure(9), "run-1"))
    assert client.resets == 2 and client.ys() == [t["y"] for t in loss_figure(9)["data"]]
    client.receive(new.update(loss_figure(10), "run-1"))
    assert client.ys() == [t["y"] for t in loss_figure(10)["data"]] and client.asked == 0


def test_a_reload_is_a_new_session_and_gets_everything_at_once():
    old = SeriesTracker()
    for n in range(1, 20):
        old.update(loss_figure(n), "run-1")
    message = SeriesTracker().update(loss_figure(20), "run-1")  # the reloaded page's session: a new tracker
    assert point_counts(message) == {0: 20, 1: 20}


def test_a_new_run_redraws_and_forgets_the_zoom():
    tracker = SeriesTracker()
    first = tracker.update(loss_figure(8), "run-1")
    tracker.update(loss_figure(9), "run-1")
    message = tracker.update(loss_figure(2), "run-2")
    assert point_counts(message) == {0: 2, 1: 2}
    # the layout's uirevision keeps the user's zoom within a run; a new run gets another one
    assert message["reset"]["layout"]["uirevision"] != first["reset"]["layout"]["uirevision"]


@pytest.mark.parametrize("change", ["style", "edited point", "fewer points", "new trace", "heatmap"])
def test_any_change_but_appending_redraws_the_figure(change):
    tracker = SeriesTracker()
    if change == "heatmap":
        tracker.update(figure_dict(compare_charts.speedup_heatmap(heatmap_result(2))))
        message = tracker.update(figure_dict(compare_charts.speedup_heatmap(heatmap_result(3))))
        assert "reset" in message
        return
    tracker.update(line(5))
    figure = line(6)
    if change == "style":
        figure = line(6, color="#e4572e")
    elif change == "edited point":
        figure["data"][0]["y"][4] = 99.0
    elif change == "fewer points":
        figure = line(4)
    else:
        figure["data"].append(copy.deepcopy(figure["data"][0]))
    assert "reset" in tracker.update(figure)


def heatmap_result(cells: int) -> dict:
    legs = [{"label": "a"}, {"label": "b"}]
    grid = {"layers": [1], "hidden_sizes": [64, 128], "batch_sizes": [32, 64]}
    measured = [{"layers": 1, "hidden": h, "batch": b, "speedup": [1.0, 2.0], "gflop_per_step": 0.1,
                 "legs": [{"step_ms": 1.0, "samples_per_s": 1e4, "floor_ratio": 3.0}] * 2}
                for h in (64, 128) for b in (32, 64)][:cells]
    return {"grid": grid, "legs": legs, "cells": measured}


def test_a_layout_change_sends_only_the_parts_that_changed():
    tracker, client = SeriesTracker(), Replica()
    client.receive(tracker.update(line(3, title={"text": "a"}, legend={"x": 1}), "s"))
    message = tracker.update(line(4, title={"text": "b"}), "s")
    change = message["chunks"][-1][1]
    assert change["layout"] == {"title": {"text": "b"}} and change["layout_drop"] == ["legend"]
    assert change["extend"]["0"]["x"] == [3]
    client.receive(message)
    assert client.layout["title"] == {"text": "b"} and "legend" not in client.layout
    # a real chart: the loss axis grows when a later epoch's loss is the largest so far
    tracker = SeriesTracker()
    tracker.update(loss_figure(3, spike_at=5), "r")
    assert set(tracker.update(loss_figure(5, spike_at=5), "r")["chunks"][-1][1]["layout"]) == {"yaxis"}


def test_bars_extend_every_per_point_array():
    legs = compare_charts.series([])
    assert legs == []
    frame = charts.epochs_frame(epoch_rows(3))
    bars = figure_dict(compare_charts.epoch_time_figure([("1. cpu", "#3b6fd8", frame)]))
    n, arrays, style = split_trace(bars["data"][0])
    assert n == 3 and set(arrays) == {"x", "y", "customdata", "marker.pattern.shape"}
    assert style["marker"]["color"] == "#3b6fd8"
    tracker = SeriesTracker()
    tracker.update(bars, "c")
    longer = figure_dict(compare_charts.epoch_time_figure([("1. cpu", "#3b6fd8", charts.epochs_frame(epoch_rows(5)))]))
    change = tracker.update(longer, "c")["chunks"][-1][1]
    assert change["extend"]["0"]["marker.pattern.shape"] == ["", ""] and change["extend"]["0"]["x"] == [4, 5]


@pytest.mark.parametrize("n", [0, 1, 10, 11, 57, 200, 1000, 10_000])
def test_thinning_keeps_an_even_stride_the_start_and_the_end(n):
    bound = 10
    keep = thin_indices(n, bound)
    if n <= bound:
        assert keep == list(range(n))
        return
    assert len(keep) <= bound // 2 and keep[0] == 0 and keep[-1] == n - 1 and keep == sorted(set(keep))
    stride = keep[1]
    assert stride & (stride - 1) == 0 and keep[:-1] == list(range(0, n, stride))[:len(keep) - 1]


def test_a_later_thinning_keeps_a_subset_of_an_earlier_one():
    """So the browser, which only has what it kept, can always apply the rule to a longer series."""
    for n in range(11, 3000, 37):
        later = set(thin_indices(n + 500, 10))
        assert later - {n + 499} <= set(thin_indices(n, 10)) | set(range(n, n + 500))


def test_a_long_series_is_sent_thinned_and_keeps_streaming_from_the_source():
    tracker, client = SeriesTracker(max_points=100), Replica()
    client.receive(tracker.update(line(1000), "b"))
    assert point_counts(tracker.update(line(1000), "b")) == {}
    assert len(client.data[0]["x"]) <= 100 and client.data[0]["x"][0] == 0 and client.data[0]["x"][-1] == 999
    assert tracker.counts == [1000]  # what the source had, so the next points are the right ones
    for n in range(1001, 1300, 7):
        client.receive(tracker.update(line(n), "b"))
    x = client.data[0]["x"]
    assert 25 <= len(x) <= 100 and x[0] == 0 and x[-1] == 1294
    gaps = {b - a for a, b in zip(x, x[1:])}
    assert max(gaps) <= 32 and len(gaps - {1}) <= 2  # one even stride over the whole run, then the newest points
    assert client.data[0]["y"] == [i * 0.5 for i in x]  # every per-point array thinned alike
    assert x == [client.source[0][p] for p in range(len(x))]  # positions in the series are the x here


def test_the_window_is_bounded_by_points_too():
    tracker = SeriesTracker(window=10, window_points=100)
    tracker.update(line(10), "b")
    for n in range(70, 400, 60):
        message = tracker.update(line(n), "b")
    assert len(message["chunks"]) == 1 and sum(point_counts(message).values()) == 60


def test_nan_and_infinity_become_null():
    figure = line(3)
    figure["data"][0]["y"] = [1.0, math.nan, math.inf]
    message = SeriesTracker().update(figure_dict(figure))
    assert message["reset"]["data"][0]["y"] == [1.0, None, None]
    frame = charts.epochs_frame(epoch_rows(2))
    frame.loc[1, "val_loss"] = math.nan
    json.dumps(SeriesTracker().update(figure_dict(charts.loss_figure(frame, 5))), allow_nan=False)


APP = """
import streamlit as st
from dashboard import charts
from dashboard.stream_chart import stream_chart

n = st.session_state.get("n", 3)
st.session_state.n = n + 2
rows = [dict(epoch=i, phase="train", lr=0.1, train_loss=1 / i, val_loss=1 / i, val_acc=0.9, seconds=1.0,
             samples_per_s=1.0, warmup=False, elapsed=float(i)) for i in range(1, n + 1)]
sent = stream_chart(charts.loss_figure(charts.epochs_frame(rows), 20), key="loss", series="run-1",
                    config=charts.CONFIG)
st.session_state.sent = sent
"""


def test_stream_chart_in_a_script_run():
    at = AppTest.from_string(APP, default_timeout=30)
    at.run()
    assert not at.exception
    first = at.session_state.sent
    assert "reset" in first and point_counts(first) == {0: 3, 1: 3}
    assert first["plotly"].startswith("/component/") and "/plotly.min.js?v=" in first["plotly"]
    assert first["js"].startswith("/component/") and "/stream_chart.js?v=" in first["js"]
    assert first["config"] == charts.CONFIG
    at.run()
    second = at.session_state.sent
    assert "reset" not in second and point_counts(second) == {0: 2, 1: 2}
    assert drawn_figure(at.session_state, "loss")["data"][0]["x"] == [1, 2, 3, 4, 5]
    assert drawn_figure(at.session_state, "other") is None
    element = at.get("bidi_component")[0]  # what went to the browser
    assert json.loads(element.proto.json)["v"] == second["v"] and element.proto.component_name == "mlp_stream_chart"


def test_urls_follow_the_base_url_path():
    from streamlit import config

    from dashboard.stream_chart import _served_urls

    saved = config.get_option("server.baseUrlPath")
    try:
        config.set_option("server.baseUrlPath", "/lab/")
        module, plotly_js = _served_urls()
    finally:
        config.set_option("server.baseUrlPath", saved)
    assert module.startswith("/lab/component/") and "/stream_chart.js?v=" in module
    assert plotly_js.startswith("/lab/component/") and "/plotly.min.js?v=" in plotly_js
