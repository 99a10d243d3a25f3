"""How a status (core.config.RunStatus) is shown: one icon per status, and its words in a heading (a run, a
comparison, a speedup map) or a table cell. A status this app does not know (an older database's) is shown as it is.
"""
from __future__ import annotations

from core.config import RunStatus

ICONS = {
    RunStatus.READY: "⏳",
    RunStatus.WAITING: "⏳",
    RunStatus.QUEUED: "⏳",
    RunStatus.LOADING: "⏳",
    RunStatus.RUNNING: "▶️",
    RunStatus.FINISHED: "✅",
    RunStatus.STOPPED: "⏹️",
    RunStatus.PRUNED: "✂️",
    RunStatus.CANCELLED: "⏹️",
    RunStatus.DIVERGED: "⚠️",
    RunStatus.FAILED: "❌",
    RunStatus.INTERRUPTED: "⚠️",
}
# A training run's heading says what its worker is doing where the status word alone would not.
RUN_WORDS = {
    RunStatus.QUEUED: "Queued: waiting for its turn (one run trains at a time per device)",
    RunStatus.LOADING: "Loading data and building the model",
    RunStatus.RUNNING: "Training",
}
# Ended with something to read: the run's message is a warning, not a caption.
TROUBLE = (RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.INTERRUPTED)


def status_label(status: str) -> str:
    """'✅ Finished', '▶️ Running': a comparison's or a speedup map's state."""
    return f"{ICONS[status]} {status.capitalize()}" if status in ICONS else status


def run_status_label(status: str, warned: bool = False) -> str:
    """'▶️ Training', '⏳ Queued: waiting for its turn (…)', '✅ Finished': a training run's state. A finished run
    with a learning warning (dashboard/live_panel.py shows it) gets no tick."""
    if warned and status == RunStatus.FINISHED:
        return f"{ICONS[RunStatus.DIVERGED]} Finished, with a warning below"
    return f"{ICONS[status]} {RUN_WORDS[status]}" if status in RUN_WORDS else status_label(status)


def status_cell(status: str) -> str:
    """'✅ finished': a status in a table column."""
    return f"{ICONS[status]} {status}" if status in ICONS else status
