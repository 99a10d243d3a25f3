"""The Train page never trains settings nobody chose: Continue's defaults, the status line's schedule,
per-layer hidden sizes, and runs that learn nothing or diverge at once (AppTest, real worker processes).

Uses the `manager` fixture and helpers of test_dashboard_app (empty DATA_DIR: the 5,000-digit sample).
"""
from __future__ import annotations

import os
import signal

import pytest

from core.config import Phase, RunConfig
from core.exchange.share_links import config_to_query
from core.runs.training_run import TrainingRun
from core.runs.store import Store
from dashboard.state import get_manager
from history_helpers import history_app
from support import wait_for

from test_dashboard_app import (APP, RUN_TIMEOUT, SLOW, AppTest, check_ok, epochs_shown, is_status, manager,  # noqa: F401
                                new_app, poll, run_id, settled, shown, start, status_line)

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow


def cli_run(manager, config: RunConfig) -> str:
    """A run trained the way `python -m core train` trains it, into the dashboard's store."""
    run = TrainingRun(config, store=Store(manager.store.path), data_dir=manager.data_dir, origin="cli")
    run.run_schedule([Phase(config.epochs, config.lr)])
    assert run.status == "finished"
    return run.id


def finished(count: int):
    return lambda at: is_status("Finished")(at) and len(epochs_shown(at)) == count


def test_continue_starts_at_the_runs_own_last_learning_rate(manager):
    rid = cli_run(manager, RunConfig(hidden_sizes=(64, 32), activation="gelu", optimizer="adam", lr=0.001,
                                     epochs=2, device="cpu"))
    at = new_app(rid)
    check_ok(at)
    assert at.select_slider(key="cont_lr").value == pytest.approx(0.001)
    assert any("0.001" in c.value and "last" in c.value for c in at.caption), [c.value for c in at.caption]
    at.number_input(key="cont_epochs").set_value(1)
    at.button(key="continue").click().run()
    check_ok(at)
    at = poll(at, finished(3), 90, "the continuation to finish")
    snap = manager.snapshot(rid)
    assert [e.lr for e in snap.epochs] == [0.001] * 3
    assert snap.config.optimizer == "adam"


def test_continue_controls_keep_the_last_continuation_and_the_status_shows_the_schedule(manager):
    at = new_app()
    rid = start(at, {"cfg_epochs": 2})
    at = poll(at, finished(2), 90, "the first phase")
    at.number_input(key="cont_epochs").set_value(3)
    at.select_slider(key="cont_lr").set_value(0.05)
    at.button(key="continue").click().run()
    check_ok(at)
    at = poll(at, finished(5), 90, "the continuation")
    assert at.number_input(key="cont_epochs").value == 3
    assert at.select_slider(key="cont_lr").value == pytest.approx(0.05)
    line = status_line(at)
    assert "2@0.5" in line and "3@0.05" in line, line
    assert [(p.epochs, p.lr) for p in manager.snapshot(rid).schedule] == [(2, 0.5), (3, 0.05)]


def test_a_run_with_unequal_hidden_sizes_reopens_and_retrains_as_it_was(manager):
    rid = cli_run(manager, RunConfig(hidden_sizes=(128, 64), epochs=1, device="cpu"))
    at = new_app(rid)
    check_ok(at)
    assert at.text_input(key="cfg_hidden_list").value == "128, 64"
    at.button(key="new_run").click().run()
    new = start(at)
    assert new != rid
    assert manager.snapshot(new).config.hidden_sizes == (128, 64)
    at = poll(at, settled, 90, "the new run to end")
    assert "[128-64]" in status_line(at)


def test_a_share_link_with_unequal_hidden_sizes_is_applied(manager):
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT)
    for key, value in config_to_query(RunConfig(hidden_sizes=(128, 64), epochs=1, device="cpu")).items():
        at.query_params[key] = value
    at.run()
    check_ok(at)
    assert any("[128-64]" in s.value for s in at.success), [s.value for s in at.success]
    rid = start(at)
    assert manager.snapshot(rid).config.hidden_sizes == (128, 64)


def test_per_layer_sizes_can_be_edited_and_bad_ones_are_refused(manager):
    at = new_app()
    at.button(key="cfg_per_layer").click().run()
    check_ok(at)
    at.text_input(key="cfg_hidden_list").set_value("48, 24, 12").run()
    rid = start(at)
    assert manager.snapshot(rid).config.hidden_sizes == (48, 24, 12)
    at = poll(at, settled, 90, "the run to end")
    at.button(key="new_run").click().run()
    at.text_input(key="cfg_hidden_list").set_value("48, x").run()
    at.button(key="train").click().run()
    assert not at.exception
    assert any("hidden" in e.value.lower() for e in at.error), [e.value for e in at.error]


def test_a_run_that_learns_nothing_finishes_with_a_warning_not_a_tick(manager):
    at = new_app()
    rid = start(at, {"cfg_optimizer": "adam", "cfg_lr": 2.0, "cfg_epochs": 3})
    at = poll(at, settled, 90, "the run to end")
    assert manager.snapshot(rid).status == "finished"  # kept: the user decides what to do with it
    assert "✅" not in status_line(at) and "warning" in status_line(at), status_line(at)
    warnings = [shown(w.value) for w in at.warning]
    assert any("Not learning" in w and "try 0.2" in w for w in warnings), warnings


def test_divergence_in_the_first_epoch_explains_the_empty_page(manager):
    at = new_app()
    start(at, {"cfg_hidden": 256, "cfg_layers": 3, "cfg_lr": 2.0})
    at = poll(at, settled, 90, "the run to end")
    assert "Diverged" in status_line(at)
    (warning,) = [shown(w.value) for w in at.warning if "diverged" in w.value]
    assert "batch losses went" in warning and "No epoch finished" in warning and "kept below" not in warning
    assert "try 0.2" in warning


def test_stopping_a_run_started_in_another_tab_needs_a_confirmation_naming_it(manager):
    owner_tab = new_app()
    rid = start(owner_tab, SLOW)
    other_tab = poll(new_app(rid), is_status("Training"), 90, "the run training, seen from a second tab")
    other_tab.button(key="stop").click().run()  # "Stop…": asks first
    check_ok(other_tab)
    assert manager.snapshot(rid).active
    assert any(rid in w.value and "another tab" in w.value for w in other_tab.warning), \
        [w.value for w in other_tab.warning]
    other_tab.button(key="stop_cancel").click().run()
    assert not other_tab.warning and manager.snapshot(rid).active
    other_tab.button(key="stop").click().run()
    other_tab.button(key="stop_confirm").click().run()
    check_ok(other_tab)
    assert poll(other_tab, is_status("Stopped"), 30, "the stopped status")
    assert manager.snapshot(rid).status == "stopped"


def test_the_tab_that_started_a_run_stops_it_at_once(manager):
    at = new_app()
    rid = start(at, SLOW)
    at = poll(at, is_status("Training"), 90, "the run training")
    at.button(key="stop").click().run()
    check_ok(at)
    assert not at.warning
    assert poll(at, is_status("Stopped"), 30, "the stopped status") and manager.snapshot(rid).status == "stopped"


def test_the_tab_that_continues_a_run_stops_it_at_once(manager):
    first_tab = new_app()
    rid = start(first_tab, {**SLOW, "cfg_epochs": 1})
    poll(first_tab, settled, 90, "the first tab's run ending")
    at = new_app(rid)  # another tab continues it: now it is that tab's run
    at.number_input(key="cont_epochs").set_value(50)
    at.button(key="continue").click().run()
    check_ok(at)
    assert manager.snapshot(rid).active
    at.button(key="stop").click().run()
    check_ok(at)
    assert not at.warning
    assert poll(at, settled, 60, "the continuation stopped") and manager.snapshot(rid).status == "stopped"


def test_a_run_continued_from_history_is_that_tabs_and_another_tab_must_confirm_stopping_it(manager):
    rid = cli_run(manager, RunConfig(hidden_sizes=(256, 256), batch_size=16, epochs=1, device="cpu"))
    history_tab = history_app(run=rid)
    history_tab.number_input(key="hist_cont_epochs").set_value(50)
    history_tab.button(key="hist_continue").click().run()
    check_ok(history_tab)
    assert history_tab.title[0].value == "Train a feedforward network" and manager.snapshot(rid).active

    other_tab = poll(new_app(rid), is_status("Training"), 90, "the continuation training, seen from a second tab")
    other_tab.button(key="stop").click().run()
    check_ok(other_tab)
    # before: the continuation had no owner, so every tab got a plain Stop that ended it at once
    assert manager.snapshot(rid).active
    assert any(rid in w.value and "another tab" in w.value for w in other_tab.warning), \
        [w.value for w in other_tab.warning]
    assert other_tab.button(key="stop_confirm").label == f"Stop run {rid}"

    history_tab.run()  # the tab that continued it stops it at once
    assert history_tab.button(key="stop").label == "Stop"
    history_tab.button(key="stop").click().run()
    check_ok(history_tab)
    assert not history_tab.warning
    assert poll(history_tab, settled, 60, "the continuation stopped") and manager.snapshot(rid).status == "stopped"


def test_a_run_no_tab_started_needs_a_confirmation_to_stop(manager):
    rid = manager.start(RunConfig(hidden_sizes=(256, 256), batch_size=16, epochs=50, device="cpu"))  # no owner
    at = poll(new_app(rid), is_status("Training"), 90, "the run training")
    assert at.button(key="stop").label == "Stop…"
    at.button(key="stop").click().run()
    check_ok(at)
    assert manager.snapshot(rid).active
    assert any(rid in w.value and "outside this tab" in w.value for w in at.warning), [w.value for w in at.warning]
    at.button(key="stop_confirm").click().run()
    assert poll(at, settled, 60, "the run stopped") and manager.snapshot(rid).status == "stopped"


def test_a_run_whose_worker_was_killed_continues_from_historys_button_without_a_restart(manager):
    rid = manager.start(RunConfig(hidden_sizes=(256, 256), batch_size=16, epochs=50, device="cpu"))
    wait_for(lambda: len(manager.snapshot(rid).epochs) >= 2, timeout=90)
    os.kill(manager._live.entry(rid).worker.process.pid, signal.SIGKILL)
    killed = wait_for(lambda: (s := manager.snapshot(rid)) and not s.active and s, timeout=30)
    assert killed.status == "interrupted" and "killed by SIGKILL" in killed.message, killed.message
    kept = len(Store(manager.store.path).epochs(rid))

    at = history_app(run=rid)
    check_ok(at)
    assert not at.button(key="hist_continue").disabled
    at.number_input(key="hist_cont_epochs").set_value(2)
    at.select_slider(key="hist_cont_lr").set_value(0.1)
    at.button(key="hist_continue").click().run()
    check_ok(at)
    assert at.title[0].value == "Train a feedforward network" and run_id(at) == rid
    at = poll(at, finished_after(rid), 120, "the continuation to finish")
    snap = manager.snapshot(rid)
    # the epochs after the last saved weights are trained again, then the two asked for
    assert snap.status == "finished" and 3 <= len(snap.epochs) <= kept + 2
    assert [e.lr for e in snap.epochs] == [0.5] * (len(snap.epochs) - 2) + [0.1, 0.1]
    assert [e.epoch for e in snap.epochs] == list(range(1, len(snap.epochs) + 1))
    assert [e["epoch"] for e in Store(manager.store.path).epochs(rid)] == [e.epoch for e in snap.epochs]
    assert get_manager() is manager  # the same server's manager: no restart


def test_a_run_whose_settings_lie_outside_the_sliders_reopens_with_them(manager):
    # the CLI trains up to 1000 epochs, batches from 1 and any seed RunConfig allows; the sliders' ranges are
    # narrower: opening such a run widens them (was: StreamlitValueAboveMaxError), never clamps what Train retrains
    config = RunConfig(epochs=120, batch_size=8, seed=2**40)
    store = Store(manager.store.path)
    rid = store.create_run(config.to_dict(), device="cpu", data_source="", torch_version="", parameters=0)
    store.finish_run(rid, "stopped")
    at = new_app(rid)
    check_ok(at)
    assert at.slider(key="cfg_epochs").value == 120 and at.slider(key="cfg_batch").value == 8
    assert at.number_input(key="cfg_seed").value == 2**40


def finished_after(rid: str):
    return lambda at: is_status("Finished")(at) and rid in status_line(at)


@pytest.mark.parametrize("column, value, says", [
    ("schedule", "[[0, 0.5]]", "epochs: must be from 1 to 1000; got 0"),
    ("config", '{"lr": -1}', "lr: must be in (0, 10]"),
    ("test_acc", "high", "test_acc: should be a number"),
])
def test_a_stored_run_that_no_longer_validates_opens_with_a_message(manager, column, value, says):
    import sqlite3
    from contextlib import closing

    store = Store(manager.store.path)
    rid = store.create_run(RunConfig().to_dict(), device="cpu", data_source="", torch_version="", parameters=0)
    store.finish_run(rid, "stopped")
    with closing(sqlite3.connect(store.path)) as db, db:
        db.execute(f"UPDATE runs SET {column}=? WHERE id=?", (value, rid))
    at = new_app(rid)
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot be opened" in e.value and says in shown(e.value) for e in at.error), [e.value for e in at.error]
