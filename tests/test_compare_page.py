"""AppTest of the Compare page's Compare tab: legs, a live two-leg comparison, results table, refresh; its figure
builders. The Speedup-map tab: tests/test_speedup_map_page.py."""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from compare_helpers import compare_app, lab_environment, no_errors, poll, streamed_traces, texts
from core.config import RunConfig
from core.studies.legs import Leg
from core.runs.reports import COMPARISON
from core.runs.store import Store
from dashboard.compare_page import CHART_KEYS
from dashboard.text import md

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    yield from lab_environment(tmp_path, monkeypatch)


def finished(at) -> bool:
    return any("Finished" in m for m in texts(at, "markdown"))


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
    seen = []  # per poll: the points of each leg's trace in the accuracy chart, while it ran

    def done(at) -> bool:
        seen.append([len(t["x"]) for t in streamed_traces(at, "cmp_chart_acc")])
        return finished(at)

    at = poll(at, done)
    # every leg's trace is there from the start (a trace added later would resend the whole streamed figure), and
    # the charts changed only by appending: one whole figure per chart in this session, its first draw
    assert all(len(counts) == 2 for counts in seen), seen
    assert seen[0][1] == 0 and seen[-1] == [3, 3], seen  # leg 2 drawn (empty) while leg 1 trains
    for key in CHART_KEYS:
        assert at.session_state[f"_stream_chart:{key}"].resets == 1, key
    assert not at.get("plotly_chart")
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
    for key in CHART_KEYS:
        data = streamed_traces(at, key)
        assert len(data) == 2 and all(len(t["x"]) == 3 for t in data)
    bars = streamed_traces(at, "cmp_chart_epochs")
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
    store.save_report(COMPARISON, payload, "poisoned", "c1")
    at = compare_app(cmp="c1")
    no_errors(at)  # before: ConfigError from the stored run's schedule
    assert any("Comparison c1 cannot be opened" in e and "got 0" in e for e in texts(at, "error")), texts(at, "error")


# -- figure builders (pure) -------------------------------------------------------------------------
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


def test_comparison_figures_only_append_while_legs_train():
    """The figures streamed while two legs train, epoch by epoch (the second leg's trace there, empty, from the
    start): every step after the first draw is appended points and layout parts, never the whole figure."""
    from core.studies.compare import LegRun
    from core.engine.train import EpochResult
    from dashboard import compare_charts
    from dashboard.stream_chart import SeriesTracker, figure_dict

    def epochs(scale, n):
        return tuple(EpochResult(i, 0, 0.5, 1.0, 0.3 / i, 0.9 + i / 100, scale * i, 1000.0 / scale, i == 1,
                                 scale * i * (i + 1) / 2, "CPU") for i in range(1, n + 1))

    first, second = Leg("cpu", 1), Leg("cpu", 1, "dataloader")
    steps = [[LegRun(first, "running", epochs(1.0, n))] for n in range(4)]
    steps += [[LegRun(first, "finished", epochs(1.0, 3)), LegRun(second, "running", epochs(50.0, n))]
              for n in range(4)]
    builders = {"time": lambda legs: compare_charts.acc_vs_time_figure(legs),
                "acc": lambda legs: compare_charts.val_acc_figure(legs, 3),
                "loss": lambda legs: compare_charts.val_loss_figure(legs, 3),
                "epochs": lambda legs: compare_charts.epoch_time_figure(legs)}
    for name, build in builders.items():
        tracker = SeriesTracker()
        for runs in steps:
            legs = compare_charts.series(runs, [first, second][len(runs):])
            message = tracker.update(figure_dict(build(legs)), "c1")
        assert tracker.resets == 1, name  # the first draw only, though the axes went log on the way
        assert "reset" not in message and [len(t["x"]) for t in tracker.figure["data"]] == [3, 3], name
    names = [t["name"] for t in tracker.figure["data"]]
    assert names == ["1. CPU · 1 thread · resident", "2. CPU · 1 thread · tutorial DataLoader"]
