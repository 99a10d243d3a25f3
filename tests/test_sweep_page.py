"""The Sweep page under AppTest: the space editor says what is wrong before anything starts, and a small real sweep
(worker processes, the 5,000-digit sample) started from the page streams into its charts and table, each trial a
run the Train page opens."""
from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from core.config import RunStatus
from dashboard.stream_chart import drawn_figure
from dashboard.sweep_page import get_sweeps

# Sweep first, Train beside it: AppTest cannot switch to callable pages it was not started with.
SWEEP_APP = """
from dashboard import pages
from dashboard.sweep_page import sweep_page
from dashboard.train_page import train_page
pages.navigation({pages.SWEEP: sweep_page, pages.TRAIN: train_page}, default=pages.SWEEP).run()
"""
RUN_TIMEOUT = 30
# the page's RunManager starts a warm worker process: the slow lane
pytestmark = pytest.mark.slow


def new_page() -> AppTest:
    return AppTest.from_string(SWEEP_APP, default_timeout=RUN_TIMEOUT).run()


def test_the_editor_shows_the_cli_line_and_refuses_a_bad_space_before_starting(app_manager):
    at = new_page()
    assert not at.exception and not at.error
    cli = [c.value for c in at.caption if "python -m core sweep" in c.value][0]
    assert '--space "hidden=32..512:log,layers=1..2,batch_size=64..512:log,lr=0.003..1:log,optimizer=sgd|adam"' in cli
    assert at.button(key="sw_start").disabled is False
    at.selectbox(key="sw_lr_mode").set_value("range").run()
    at.text_input(key="sw_lr_low").set_value("1").run()
    at.text_input(key="sw_lr_high").set_value("0.1").run()
    assert "a range must go up" in " ".join(e.value for e in at.error)
    assert at.button(key="sw_start").disabled is True
    at.text_input(key="sw_lr_low").set_value("0.01").run()
    at.selectbox(key="sw_optimizer_mode").set_value("fixed").run()
    at.selectbox(key="sw_optimizer_value").set_value("adam").run()
    assert not at.error and at.button(key="sw_start").disabled is False
    assert "lr=0.01..0.1:log,optimizer=adam" in [c.value for c in at.caption if "python -m core" in c.value][0]


def test_a_sweep_started_on_the_page_streams_its_trials_and_opens_the_best_in_train(app_manager):
    at = new_page()
    for name, (low, high) in {"hidden": ("16", "64"), "batch_size": ("100", "400")}.items():
        at.text_input(key=f"sw_{name}_low").set_value(low).run()
        at.text_input(key=f"sw_{name}_high").set_value(high).run()
    at.number_input(key="sw_trials").set_value(3).run()
    at.number_input(key="sw_epochs").set_value(2).run()
    at.button(key="sw_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sweep_id = at.query_params["sweep"]
    sweep_id = sweep_id[0] if isinstance(sweep_id, list) else sweep_id
    deadline = time.monotonic() + 180
    while "Finished" not in " ".join(m.value for m in at.markdown):
        assert time.monotonic() < deadline, [m.value for m in at.markdown]
        time.sleep(0.5)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    curves = drawn_figure(at.session_state, "sweep_curves")
    assert [t["name"] for t in curves["data"]] == ["trial 0", "trial 1", "trial 2"]
    assert all(1 <= len(t["x"]) <= 2 for t in curves["data"])
    table = at.dataframe[0].value
    assert sorted(table["trial"]) == [0, 1, 2] and table["run"].str.startswith("train?run=").all()
    snap = get_sweeps().snapshot(sweep_id)
    assert snap.status == RunStatus.FINISHED and len(snap.trials) == 3
    stored = {row["id"]: row for row in app_manager.store.list_runs()}
    assert {t.run_id for t in snap.trials} <= set(stored)
    assert all(stored[t.run_id]["sweep_id"] == sweep_id for t in snap.trials)
    at.button(key="sw_open_best").click().run()
    assert at.query_params["run"] in (snap.best.run_id, [snap.best.run_id])
    assert not at.exception
