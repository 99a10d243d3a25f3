"""The dashboard's one status vocabulary (dashboard/status.py): every RunStatus has an icon, and the texts the pages
showed before it are unchanged."""
from __future__ import annotations

from core.config import RunStatus
from dashboard.status import ICONS, run_status_label, status_cell, status_label


def test_every_status_has_an_icon():
    assert set(ICONS) == set(RunStatus)


def test_texts_shown_before_are_kept():
    # the Compare page's and the speedup map's headings
    assert {s: status_label(s) for s in ("queued", "running", "finished", "stopped", "failed", "waiting",
                                         "cancelled")} == {
        "queued": "⏳ Queued", "running": "▶️ Running", "finished": "✅ Finished", "stopped": "⏹️ Stopped",
        "failed": "❌ Failed", "waiting": "⏳ Waiting", "cancelled": "⏹️ Cancelled"}
    # a run's heading on Train and in History's run details
    assert {s: run_status_label(s) for s in ("queued", "loading", "running", "finished", "stopped", "diverged",
                                             "failed", "interrupted")} == {
        "queued": "⏳ Queued: waiting for its turn (one run trains at a time per device)",
        "loading": "⏳ Loading data and building the model", "running": "▶️ Training", "finished": "✅ Finished",
        "stopped": "⏹️ Stopped", "diverged": "⚠️ Diverged", "failed": "❌ Failed", "interrupted": "⚠️ Interrupted"}
    # History's table
    assert {s: status_cell(s) for s in ("finished", "stopped", "diverged", "interrupted", "failed", "running")} == {
        "finished": "✅ finished", "stopped": "⏹️ stopped", "diverged": "⚠️ diverged",
        "interrupted": "⚠️ interrupted", "failed": "❌ failed", "running": "▶️ running"}


def test_a_finished_run_with_a_warning_gets_no_tick():
    assert run_status_label("finished", warned=True) == "⚠️ Finished, with a warning below"
    assert run_status_label("stopped", warned=True) == "⏹️ Stopped"


def test_an_unknown_status_is_shown_as_it_is():
    assert status_label("paused") == run_status_label("paused") == status_cell("paused") == "paused"
