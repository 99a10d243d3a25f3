"""What the Train page's live panel shows of a run, as values: the parts that change while it trains (progress, tiles,
system strip, chart points) and a digest of the rest (its shape). No Streamlit here.

The panel draws from these (live_panel.py), and the live feed (live_feed.py) sends them to a page between redraws:
the browser puts the new text in place and appends the new points to the charts, and asks for a redraw only when
the shape changes (the status, a warning, a chart or tile that appears, an axis that must grow).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time

from core.config import RunStatus
from core.engine.data import CLASS_NAMES
from core.engine.health import learning_warnings
from core.engine.train import median_timed_epoch
from core.runs.manager import RunSnapshot

from . import charts
from .status import run_status_label
from .stream_chart import finite
from .system_strip import STALE_S, cpu_text, gpu_text, process_text
from .text import md

_ESCAPED = re.compile(r"\\(.)")


def eta_seconds(snap: RunSnapshot) -> float | None:
    per_epoch = median_timed_epoch(snap.epochs)
    if per_epoch is None:
        progress = snap.progress
        if progress is None or progress.batch == 0:
            return None
        per_epoch = progress.seconds * progress.batches / progress.batch
    remaining = max(0, snap.planned_epochs - len(snap.epochs))
    done_in_current = snap.progress.batch / snap.progress.batches if snap.progress else 0.0
    return max(0.0, (remaining - done_in_current) * per_epoch)


def run_warnings(snap: RunSnapshot) -> list[str]:
    """Not-learning and rising-loss warnings (the run goes on; the user decides)."""
    steps = math.ceil(snap.n_train / snap.config.batch_size) if snap.n_train else None
    return learning_warnings(snap.epochs, len(CLASS_NAMES.get(snap.config.dataset, range(10))), steps_per_epoch=steps)


def live_warnings(snap: RunSnapshot) -> list[str]:
    """run_warnings as plain text, for the live feed to show while the run trains: they come and go from one epoch
    to the next (a validation loss that rose three epochs in a row), and a redraw each time cost ~0.1 s of CPU."""
    return ["".join(text_nodes(w)) for w in run_warnings(snap)]


def status_text(snap: RunSnapshot) -> str:
    return run_status_label(snap.status, warned=snap.status == RunStatus.FINISHED and bool(run_warnings(snap)))


def progress_view(snap: RunSnapshot) -> tuple[float, str] | None:
    """(fraction done, the bar's markdown text) while the run has not ended; None after."""
    if not snap.active:
        return None
    if snap.status == RunStatus.QUEUED:
        ahead = snap.queue_ahead
        where = md(snap.device.split(":")[0]) if snap.device else "device"
        return 0.0, (f"Waiting for the {where}: {ahead} run{'s' * (ahead != 1)} ahead of this one" if ahead
                     else f"Waiting for the {where}")
    if snap.status == RunStatus.LOADING or snap.progress is None and not snap.epochs:
        return 0.0, "Starting: loading the data and building the model"
    progress = snap.progress
    epoch = progress.epoch if progress else len(snap.epochs) + 1
    fraction = progress.batch / progress.batches if progress else 0.0
    eta = eta_seconds(snap)
    eta_text = f" · about {eta:.0f} s left" if eta is not None and eta >= 1 else \
        " · under a second left" if eta is not None else ""
    return min(1.0, fraction), (f"Epoch {epoch} of {snap.planned_epochs}: batch {progress.batch if progress else 0} "
                                f"of {progress.batches if progress else '…'}{eta_text}")


def tile_values(snap: RunSnapshot) -> list[tuple[str, str | None]]:
    """(value, delta) of the four tiles: validation accuracy, epoch time, samples/s, epochs."""
    last = snap.epochs[-1] if snap.epochs else None
    previous = snap.epochs[-2] if len(snap.epochs) > 1 else None
    return [(f"{last.val_acc:.2%}" if last else "–",
             f"{(last.val_acc - previous.val_acc) * 100:+.2f} pts" if previous else None),
            (f"{last.seconds:.2f} s" if last else "–", None),
            (f"{last.samples_per_s:,.0f}" if last else "–", None),
            (f"{len(snap.epochs)} / {snap.planned_epochs}", None)]


def strip_state(snap: RunSnapshot) -> str:
    """'' (no strip: queued or ended), 'waiting' (no current sample) or 'live'."""
    if not snap.active or snap.status == RunStatus.QUEUED:
        return ""
    sample = snap.telemetry
    return "waiting" if sample is None or time.time() - sample.at > STALE_S else "live"


def text_nodes(markdown: str) -> list[str]:
    """The text nodes Streamlit renders for one line of our markdown: plain runs with their escapes undone and
    `code` spans, in order (the browser replaces the nodes' text one for one, never the markup)."""
    nodes = []
    for i, part in enumerate(markdown.split("`")):
        text = part if i % 2 else _ESCAPED.sub(r"\1", part)
        if text:
            nodes.append(text)
    return nodes


def strip_texts(snap: RunSnapshot) -> list[list[str]] | None:
    """The system strip's three captions as text nodes while it shows a sample; None otherwise."""
    if strip_state(snap) != "live":
        return None
    return [text_nodes(f(snap.telemetry)) for f in (cpu_text, process_text, gpu_text)]


def chart_points(snap: RunSnapshot) -> dict[str, list[tuple[list, list]]]:
    """Per live chart (its stream_chart key): (x, y) per trace, as its figure holds them (charts.py)."""
    return {"live_loss": charts.loss_points(snap.epochs, snap.batch_losses),
            "live_acc": charts.accuracy_points(snap.epochs)}


def panel_shape(snap: RunSnapshot) -> str:
    """A digest of everything on the panel that the live feed does not update in place: when it changes, the page
    redraws the panel (status line and messages, which charts and tiles exist, axes, the strip's layout)."""
    points = chart_points(snap)
    parts = [snap.run_id, snap.status, snap.message, snap.data_note, snap.store_warning, snap.test_acc, snap.device,
             [(p.epochs, p.lr) for p in snap.schedule], snap.planned_epochs, snap.parameters, snap.n_train,
             snap.cpu_threads, len(snap.layers), None if snap.active else run_warnings(snap), strip_state(snap),
             bool(snap.epochs), bool(snap.batch_losses), len(snap.epochs) > 1,
             charts.loss_range(points["live_loss"]), charts.accuracy_range(points["live_acc"])]
    return hashlib.sha1(json.dumps(finite(parts), default=str).encode()).hexdigest()[:16]


def cursor(snap: RunSnapshot) -> dict:
    """What a page drawn from `snap` holds: epochs, per-batch points and the last one's position (the snapshot's
    per-batch curve is halved now and then; a page holding a point that is gone must redraw)."""
    return {"e": len(snap.epochs), "b": len(snap.batch_losses),
            "bx": snap.batch_losses[-1][0] if snap.batch_losses else None}


def delta(snap: RunSnapshot | None, since: dict, shape: str) -> dict:
    """What a page at cursor `since`, drawn with panel shape `shape`, needs to show `snap`: the new text and the
    points to append, with "rerun": true when the panel must also be redrawn (another shape: the page keeps taking
    points while the redraw comes). Only {"rerun": true} when the run is gone or the page holds a per-batch point
    the snapshot no longer has (its curve was halved). A run that has ended always needs the redraw (its buttons)."""
    if snap is None:
        return {"rerun": True, "active": False}
    e, b, bx = since.get("e", 0), since.get("b", 0), since.get("bx")
    points = snap.batch_losses
    intact = b <= len(points) and (b == 0 or points[b - 1][0] == bx)
    if not intact or e > len(snap.epochs):
        return {"rerun": True, "active": snap.active}
    extends = {}
    for key, traces in chart_points(snap).items():
        starts = ([b] if key == "live_loss" else []) + [e] * (len(traces) - (key == "live_loss"))
        new = {str(i): {"x": x[at:], "y": y[at:]} for i, ((x, y), at) in enumerate(zip(traces, starts)) if len(x) > at}
        if new:
            extends[key] = {"extend": new, "at": {i: starts[int(i)] for i in new}}
    bar = progress_view(snap)
    return finite({
        "active": snap.active, "rerun": not snap.active or panel_shape(snap) != shape, "cursor": cursor(snap),
        "charts": extends,
        "progress": None if bar is None else {"fraction": bar[0], "text": text_nodes(bar[1])},
        "tiles": None if snap.status == RunStatus.QUEUED else
        [{"value": [value], "delta": [d] if d else None, "up": d is None or not d.startswith("-")}
         for value, d in tile_values(snap)],
        "strip": strip_texts(snap), "warnings": live_warnings(snap)})
