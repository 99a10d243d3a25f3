"""AppTest of the Compare page's Speedup-map tab (dashboard/speedup_map_page.py): a map runs, shows its heatmaps and
reloads, a cancelled one keeps its cells, the time estimate; the heatmap builders."""
from __future__ import annotations

import pytest

from compare_helpers import compare_app, lab_environment, no_errors, poll, texts, traces

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
slow = pytest.mark.slow


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    yield from lab_environment(tmp_path, monkeypatch)


@slow
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
    fresh = compare_app()  # a new tab without the link: reopened from the stored maps
    fresh.selectbox(key="map_recent").set_value(map_id).run()
    fresh.button(key="map_open").click().run()
    no_errors(fresh)
    assert fresh.query_params["map"] in (map_id, [map_id])
    assert any("2 of 2 cells" in m for m in texts(fresh, "markdown"))


@slow
def test_speedup_map_cancel_keeps_cells(app_env):
    from dashboard.lab import get_lab

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


@slow
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
