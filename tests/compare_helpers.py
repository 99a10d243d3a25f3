"""AppTest plumbing shared by the Compare page's tests (its Compare tab and its Speedup-map tab): the page as a
script, an environment whose worker processes and map jobs are shut down after each test, polling."""
from __future__ import annotations

import json
import time

import streamlit as st
from streamlit.testing.v1 import AppTest

from core.runs.manager import RunManager
from core.studies.map_jobs import MapJobs
from dashboard.stream_chart import drawn_figure

COMPARE_APP = """
from dashboard.compare_page import compare_page

compare_page()
"""


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


def lab_environment(tmp_path, monkeypatch):
    """A fixture's body: the 5,000-digit MNIST sample, a fresh run database, clean Streamlit resources."""
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


def traces(at, key: str) -> list[dict]:
    """The traces of the st.plotly_chart with this key (the speedup map's heatmaps)."""
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(key)]
    assert len(charts) == 1, [c.proto.id for c in at.get("plotly_chart")]
    return json.loads(charts[0].proto.spec)["data"]


def streamed_traces(at, key: str) -> list[dict]:
    """The traces last given to the streamed chart with this key (dashboard/stream_chart.py: the comparison's)."""
    figure = drawn_figure(at.session_state, key)
    assert figure is not None, f"no streamed chart {key!r}"
    return figure["data"]
