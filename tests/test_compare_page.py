"""AppTest of the Compare page: legs, a live two-leg comparison, results table, refresh, speedup map; figure
builders."""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.config import RunConfig
from core.studies.legs import Leg
from core.runs.manager import RunManager
from core.runs.reports import COMPARISON, ReportStore
from core.studies.map_jobs import MapJobs
from core.runs.store import Store
from dashboard.text import md

REPO = Path(__file__).resolve().parent.parent
COMPARE_APP = """
from dashboard.compare_page import compare_page

compare_page()
"""

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow


class Tracker:
    """Every RunManager and MapJobs the app creates, so each test can shut their processes down."""

    def __init__(self, monkeypatch):
        self.created = []
        for cls in (RunManager, MapJobs):
            original = cls.__init__

            def init(obj, *args, _original=original, **kwargs):
                _original(obj, *args, **kwargs)
                self.created.append(obj)

            monkeypatch.setattr(cls, "__init__", init)

    def shutdown(self) -> None:
        for obj in reversed(self.created):
            obj.shutdown(timeout=3)


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))  # empty: the 5,000-digit MNIST sample
    monkeypatch.setenv("RUNS_DB", str(tmp_path / "runs.db"))
    st.cache_resource.clear()
    tracker = Tracker(monkeypatch)
    yield tmp_path
    tracker.shutdown()
    st.cache_resource.clear()


def compare_app(**query) -> AppTest:
    at = AppTest.from_string(COMPARE_APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def no_errors(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def poll(at, done, timeout: float = 120.0) -> AppTest:
    """run_every timers never fire in AppTest: rerun the script until done(at)."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        no_errors(at)
        if done(at):
            return at
        assert time.monotonic() < deadline, "timed out waiting for the page"
        time.sleep(0.3)


def texts(at, kind: str) -> list[str]:
    return [el.value for el in at.get(kind)]


def finished(at) -> bool:
    return any("Finished" in m for m in texts(at, "markdown"))


def traces(at, key: str) -> list[dict]:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)["data"]


def test_legs_default_edit_and_pipeline_switch(app_env):
    at = compare_app()
    no_errors(at)
    markdown = texts(at, "markdown")
    assert any("one after the other" in m for m in markdown)
    legs = [m for m in markdown if m.startswith("**1.**") or m.startswith("**2.**")]
    import torch
    if not torch.cuda.is_available():
        assert legs[0].startswith("**1.** CPU · 1 thread") and "threads" in legs[1]
        assert any("CUDA leg unavailable" in c and "no NVIDIA GPU" in c for c in texts(at, "caption"))
    at.toggle(key="cmp_pipeline").set_value(True).run()
    assert any("tutorial DataLoader" in m and "pipeline switch" in m for m in texts(at, "markdown"))
    at.selectbox(key="cmp_new_threads").set_value(1).run()
    at.selectbox(key="cmp_new_pipeline").set_value("dataloader").run()
    at.button(key="cmp_add").click().run()
    assert at.session_state.cmp_legs[-1] == "device=cpu,threads=1,pipeline=dataloader"
    at.button(key="cmp_add").click().run()  # the same leg again: refused, and the page says why
    assert at.session_state.cmp_legs.count("device=cpu,threads=1,pipeline=dataloader") == 1
    assert any("Not added" in e and "repeats leg 3" in e for e in texts(at, "error"))
    # the switch does not add a twin that is already a leg
    assert not any("pipeline switch" in m for m in texts(at, "markdown"))
    at.button(key="cmp_rm_0").click().run()
    assert len(at.session_state.cmp_legs) == 2
    at.button(key="cmp_reset").click().run()
    assert len(at.session_state.cmp_legs) == 2
    no_errors(at)


def test_two_leg_comparison_runs_live_and_shows_results(app_env):
    at = compare_app()
    at.slider(key="cmp_epochs").set_value(3).run()
    at.slider(key="cmp_target").set_value(85.0).run()
    at.button(key="cmp_run").click().run()
    no_errors(at)
    comparison_id = at.query_params["cmp"][0] if isinstance(at.query_params["cmp"], list) else at.query_params["cmp"]
    assert comparison_id
    at = poll(at, finished)
    table = at.dataframe[0].value
    assert list(table["leg"]) == ["1. CPU · 1 thread · resident", f"2. {table['leg'][1][3:]}"]
    assert "threads" in table["leg"][1]
    assert not any("(" in leg for leg in table["leg"])  # finished legs: no status suffix
    assert table["speedup"][0] == "1.00x" and table["speedup"][1].endswith("x")
    assert list(table.columns) == ["leg", "warm-up s", "median s", "samples/s", "speedup", "to target s",
                                   "val acc", "test acc", "same start", "drift", "others' CPU"]  # fits 1400 px
    assert all(float(v) > 0 for v in table["median s"])
    assert all(float(v) > 0 for v in table["warm-up s"])
    assert table["same start"][0] == "baseline" and table["same start"][1].startswith("✓")
    assert float(table["drift"][1]) >= 0  # reported as drift, whatever it is
    assert any(s.startswith("Same start:") for s in texts(at, "success"))
    assert any(s.startswith("Drift:") for s in texts(at, "info"))
    assert not any("Drift" in s for s in texts(at, "warning") + texts(at, "error"))  # never an alarm
    for key in ("cmp_chart_acc", "cmp_chart_loss", "cmp_chart_time", "cmp_chart_epochs"):
        data = traces(at, key)
        assert len(data) == 2 and all(len(t["x"]) == 3 for t in data)
    bars = traces(at, "cmp_chart_epochs")
    assert bars[0]["marker"]["pattern"]["shape"] == ["/", "", ""]  # the warm-up epoch is marked
    # a refresh (a new session with the same URL) finds the finished comparison
    again = compare_app(cmp=comparison_id)
    no_errors(again)
    assert finished(again) and len(again.dataframe[0].value["leg"]) == 2
    # and the target is adjustable after the fact
    again.slider(key="cmp_target").set_value(99.5).run()
    assert set(again.dataframe[0].value["to target s"]) == {"not reached"}


def test_unknown_comparison_id_says_so(app_env):
    at = compare_app(cmp="c0000000000")
    no_errors(at)
    assert any("No comparison" in e for e in texts(at, "error"))


@pytest.mark.parametrize("key", ["cmp", "map"])
def test_an_id_from_the_link_is_shown_as_text(app_env, key):
    value = "x`[CLICKME](https://evil.example/x)` ![IMG](http://127.0.0.1:9/p.png)"
    at = compare_app(**{key: value})
    no_errors(at)
    (error,) = [e for e in texts(at, "error") if "in this server or its history" in e]
    assert md(value) in error, error  # before: the id inside backticks, which its own backtick ended: a live link


def test_a_stored_comparison_whose_run_no_longer_validates_says_so(app_env):
    store = Store(app_env / "runs.db")
    run_id = store.create_run(RunConfig().to_dict(), device="cpu", data_source="", torch_version="", parameters=0)
    store.finish_run(run_id, "finished")
    with closing(sqlite3.connect(store.path)) as db, db:  # as an unchecked upload left it before
        db.execute("UPDATE runs SET schedule='[[0, 0.5]]' WHERE id=?", (run_id,))
    legs = [Leg("cpu", 1)]
    payload = {"id": "c1", "created_at": time.time(), "status": "finished", "message": "", "overlap": "",
               "base": RunConfig().to_dict(), "legs": [leg.to_dict() for leg in legs], "phases": [[5, 0.5]],
               "run_ids": [run_id], "target": 0.9}
    ReportStore(store).save(COMPARISON, payload, "poisoned", "c1")
    at = compare_app(cmp="c1")
    no_errors(at)  # before: ConfigError from the stored run's schedule
    assert any("Comparison c1 cannot be opened" in e and "got 0" in e for e in texts(at, "error")), texts(at, "error")


def test_speedup_map_runs_shows_heatmaps_and_reloads(app_env):
    at = compare_app()
    at.multiselect(key="map_hidden").set_value([16, 64]).run()
    at.multiselect(key="map_layers").set_value([1]).run()
    at.multiselect(key="map_batches").set_value([32]).run()
    at.number_input(key="map_steps").set_value(2).run()
    at.button(key="map_run").click().run()
    no_errors(at)
    map_id = at.query_params["map"]
    at = poll(at, lambda a: any(m.startswith("✅ Finished: 2 of 2 cells") for m in texts(a, "markdown")))
    speedup = traces(at, "map_speedup_0")[0]
    assert speedup["type"] == "heatmap" and speedup["x"] == ["32"] and len(speedup["y"]) == 2
    assert all("FLOP floor" in row[0] for row in speedup["customdata"])
    assert len(traces(at, "map_throughput_0")) == 1 and len(traces(at, "map_throughput_1")) == 1
    again = compare_app(map=map_id)  # refresh: reloaded from the run database
    no_errors(again)
    assert any("2 of 2 cells" in m for m in texts(again, "markdown"))
    assert again.selectbox(key="map_recent").value == map_id


def test_speedup_map_cancel_keeps_cells(app_env):
    from dashboard.compare_page import get_lab

    at = compare_app()
    at.multiselect(key="map_hidden").set_value([16, 2048]).run()  # a quick cell, then a slow one
    at.multiselect(key="map_layers").set_value([1]).run()
    at.multiselect(key="map_batches").set_value([64]).run()
    at.number_input(key="map_steps").set_value(1000).run()
    at.button(key="map_run").click().run()
    map_id = at.query_params["map"]
    assert any(p.proto.text.startswith("⏳") or p.proto.text.startswith("▶️") for p in at.get("progress"))
    at = poll(at, lambda a: len(get_lab().maps.snapshot(map_id).cells) == 1, timeout=120)
    at.button(key="map_cancel").click().run()
    at = poll(at, lambda a: any(m.startswith("⏹️ Cancelled") for m in texts(a, "markdown")), timeout=60)
    assert any("cancelled after 1 of 2 cells" in m for m in texts(at, "markdown"))
    assert len(traces(at, "map_speedup_0")[0]["y"]) == 2  # the unmeasured row stays in the map, empty


# -- figure builders (pure) -------------------------------------------------------------------------
def _map(cells):
    legs = [{"label": "CPU · 1 thread · resident", "spec": "device=cpu,threads=1", "gemm_gflops": 30.0},
            {"label": "CPU · 2 threads · resident", "spec": "device=cpu,threads=2", "gemm_gflops": 60.0}]
    return {"grid": {"hidden_sizes": [32, 64], "layers": [1], "batch_sizes": [16, 64], "steps": 3, "warmup_steps": 1},
            "legs": legs, "cells": cells, "status": "running", "total_cells": 4}


def _cell(hidden, batch, t0, t1):
    timing = [{"seconds": t, "step_ms": t / 3 * 1e3, "samples_per_s": 3 * batch / t, "floor_s": t / 10,
               "floor_ratio": 10.0} for t in (t0, t1)]
    return {"layers": 1, "hidden": hidden, "batch": batch, "gflop_per_step": 0.01, "legs": timing,
            "speedup": [1.0, t0 / t1]}


def test_speedup_heatmap_places_cells_and_leaves_missing_ones_empty():
    from dashboard import compare_charts

    fig = compare_charts.speedup_heatmap(_map([_cell(32, 16, 2.0, 1.0), _cell(64, 64, 1.0, 4.0)]))
    trace = fig.data[0]
    assert list(trace.x) == ["16", "64"] and list(trace.y) == ["1 x 32", "1 x 64"]
    assert trace.z[0][0] == pytest.approx(1.0) and trace.z[1][1] == pytest.approx(-2.0)  # log2 of 2x and 0.25x
    assert trace.z[0][1] is None and trace.customdata[0][1] == "not measured"
    assert trace.text[0][0] == "2.00x" and "10.0x its FLOP floor" in trace.customdata[0][0]
    throughput = compare_charts.throughput_heatmap(_map([_cell(32, 16, 2.0, 1.0)]), leg=1)
    assert throughput.data[0].text[0][0] == "48"


def test_comparison_figures_overlay_one_trace_per_leg():
    from core.studies.compare import LegRun
    from core.engine.train import EpochResult
    from dashboard import compare_charts

    def epochs(scale):
        return tuple(EpochResult(i, 0, 0.5, 1.0, 0.3 / i, 0.9 + i / 100, scale * i, 1000.0 / scale, i == 1,
                                 scale * i * (i + 1) / 2, "CPU") for i in (1, 2, 3))

    legs = compare_charts.series([LegRun(Leg("cpu", 1), "finished", epochs(1.0)),
                                  LegRun(Leg("cpu", 1, "dataloader"), "finished", epochs(50.0))])
    assert [name for name, _, _ in legs] == ["1. CPU · 1 thread · resident", "2. CPU · 1 thread · tutorial DataLoader"]
    assert len(compare_charts.val_acc_figure(legs, 5).data) == 2
    assert compare_charts.acc_vs_time_figure(legs).layout.xaxis.type == "log"  # 50x apart
    bars = compare_charts.epoch_time_figure(legs)
    assert bars.layout.yaxis.type == "log" and list(bars.data[1].marker.pattern.shape) == ["/", "", ""]


def test_speedup_map_shows_its_time_estimate_and_asks_before_a_long_one(app_env):
    at = compare_app()
    no_errors(at)
    assert any(c.startswith("Estimated time: about") for c in texts(at, "caption"))  # the default grid: seconds
    assert not at.button(key="map_run").disabled
    at.multiselect(key="map_hidden").set_value([2048]).run()
    at.multiselect(key="map_layers").set_value([4]).run()
    at.multiselect(key="map_batches").set_value([4096]).run()
    at.number_input(key="map_steps").set_value(1000).run()
    assert any(w.startswith("This map would take about") for w in texts(at, "warning"))
    assert at.button(key="map_run").disabled  # until the long run is accepted
    at.checkbox(key="map_long_ok").check().run()
    assert not at.button(key="map_run").disabled
    no_errors(at)
