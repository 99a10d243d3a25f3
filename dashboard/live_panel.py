"""The live run panel: status, progress with ETA, metric tiles, charts, model summary.

Drawn from RunManager snapshots only, inside a fragment. While the run is active the live feed (live_feed.py) keeps
the drawn panel current without reruns, and reruns the fragment only when the panel's shape changes.
"""
from __future__ import annotations

import streamlit as st

from core.config import RunStatus
from core.runs.manager import ACTIVE, RunSnapshot
from core.engine.train import median_timed_epoch

from . import charts
from .live_feed import live_feed
from .live_view import progress_view, run_warnings, status_text, tile_values
from .system_strip import draw_runtime, draw_system_strip
from .stream_chart import stream_chart
from .text import md

POLL_SECONDS = 1.0  # without the live feed's route, each redraw costs the server and the browser CPU
MIN_POLL_SECONDS = 0.35  # the shortest gap between two draws (short epochs: several arrive per draw)
EPOCH_LEAD_S = 0.25  # a poll is timed this long before the current epoch should end...
EPOCH_WAIT_S = 0.4  # ...and waits on the server (no CPU) up to this long for it, to draw it the moment it ends
QUEUED_POLL_SECONDS = 3.0  # a queued run's page only shows its place in the queue
BATCH_POINTS = 2000  # per-batch loss points a chart keeps in the browser (older ones thinned evenly)


def draw_status(snap: RunSnapshot, fallback_s: float = POLL_SECONDS) -> None:
    # The config is validated (numbers and names from fixed lists): shown as is; the rest is escaped.
    st.markdown(f"**{md(status_text(snap))}** · run {md(snap.run_id)} · "
                f"{snap.config.describe(snap.schedule)} · {md(snap.device or snap.config.device)}")
    # Messages can quote paths, file names and settings: shown as text, never as markdown (links, images).
    if snap.data_note:
        st.info(md(snap.data_note))
    if snap.store_warning:
        st.warning(md(snap.store_warning))
    message = md(snap.message)
    if snap.status == RunStatus.FAILED:
        st.error(f"Training failed: {message}")
    elif snap.status == RunStatus.DIVERGED:
        kept = (f"The {len(snap.epochs)} epoch{'s' * (len(snap.epochs) != 1)} before it are kept below."
                if snap.epochs else "No epoch finished, so there is no curve to show and nothing was kept.")
        st.warning(f"The run diverged: {message}. {kept} Lower the learning rate (or use a smaller model) "
                   f"and train again.")
    elif snap.status == RunStatus.INTERRUPTED:
        st.warning(f"This run was interrupted: {message or 'the process ended before it finished'}. "
                   f"Its epochs are kept.")
    elif snap.message and snap.status in (RunStatus.STOPPED, RunStatus.PRUNED, *ACTIVE):  # e.g. why it was pruned
        st.caption(message)
    if snap.active:  # the live feed shows them (they can change at every epoch)
        live_feed(snap, fallback_s)
        return
    for warning in run_warnings(snap):
        st.warning(warning)


def draw_progress(snap: RunSnapshot) -> None:
    bar = progress_view(snap)
    if bar is not None:
        st.progress(bar[0], text=bar[1])


def draw_tiles(snap: RunSnapshot) -> None:
    values = tile_values(snap)
    cols = st.columns(4)
    cols[0].metric("Validation accuracy", values[0][0], delta=values[0][1])
    cols[1].metric("Epoch time", values[1][0],
                   help="Training plus validation, wall clock, synchronized. Epoch 1 includes one-off warm-up costs.")
    cols[2].metric("Samples / s", values[2][0])
    cols[3].metric("Epochs", values[3][0], help="Test accuracy (official test split) appears when a phase ends.")
    if snap.test_acc is not None and not snap.active:
        st.caption(f"Test accuracy (official test split, never used for training): **{snap.test_acc:.2%}**")


def epoch_left_seconds(snap: RunSnapshot) -> float | None:
    """Seconds until the training epoch should end, from the median epoch time and the batches done; None before
    an epoch has been timed or while no batch is reported."""
    per_epoch, progress = median_timed_epoch(snap.epochs), snap.progress
    if per_epoch is None or progress is None or snap.status != RunStatus.RUNNING:
        return None
    return per_epoch * (1 - progress.batch / progress.batches)


def next_poll_seconds(snap: RunSnapshot) -> float:
    """While training: POLL_SECONDS, or EPOCH_LEAD_S before the current epoch should end when that is sooner
    (never under MIN_POLL_SECONDS): that poll then waits for the epoch (wait_for_epoch), so a finished epoch is
    drawn about as soon as it ends without polling faster all the time."""
    left = epoch_left_seconds(snap)
    if left is None:
        return POLL_SECONDS
    return min(POLL_SECONDS, max(MIN_POLL_SECONDS, left - EPOCH_LEAD_S))


def latest_snapshot(get_snapshot, wait_for_epoch=None) -> RunSnapshot | None:
    """The run's snapshot now, or, when an epoch should end within EPOCH_WAIT_S, as soon as it has ended."""
    snap = get_snapshot()
    left = epoch_left_seconds(snap) if snap is not None and wait_for_epoch is not None else None
    if left is not None and left <= EPOCH_WAIT_S:
        snap = wait_for_epoch(len(snap.epochs), min(EPOCH_WAIT_S, left + 0.1)) or snap
    return snap


def draw_charts(snap: RunSnapshot) -> None:
    if not snap.epochs and not snap.batch_losses:
        # Empty axes say nothing, and a tab's first chart loads Plotly (~2 s of a core in the browser): ten tabs
        # starting runs at once each paid it together, and a starved tab showed nothing for 10-20 s.
        st.caption("The loss and accuracy charts appear when the first batches are trained.")
        return
    planned = max(snap.planned_epochs, len(snap.epochs), 1)
    frame = charts.epochs_frame(snap.epochs)
    # Streamed: the chart elements stay mounted for the whole run and take only the new points (stream_chart.py).
    left, right = st.columns(2)
    with left:
        stream_chart(charts.loss_figure(frame, planned, snap.batch_losses), key="live_loss", series=snap.run_id,
                     config=charts.CONFIG, max_points=BATCH_POINTS)
    with right:
        if snap.epochs:
            stream_chart(charts.accuracy_figure(frame, planned), key="live_acc", series=snap.run_id,
                         config=charts.CONFIG)
        else:
            st.caption("Validation accuracy appears when the first epoch ends.")


def draw_model(snap: RunSnapshot) -> None:
    with st.expander(f"Model: {snap.parameters:,} parameters on {md(snap.device or '…')}", expanded=False):
        if snap.layers:  # a markdown table: redrawn on every poll, and a data grid costs the browser far more
            st.markdown(layers_table(snap.layers))
        if snap.n_train:
            st.caption(f"{md(snap.data_title)}: {snap.n_train:,} training / {snap.n_val:,} validation samples "
                       f"({snap.config.val_fraction:.0%} random split, seed {snap.config.seed}); "
                       f"pipeline: {snap.config.pipeline}")
        draw_runtime(snap)  # torch, CUDA, CPU threads
        if snap.epochs and not snap.active:  # per-epoch table once the run rests: redraws are not free
            st.dataframe(charts.epochs_frame(snap.epochs), hide_index=True)


def layers_table(layers) -> str:
    rows = [f"| {r.kind} | {r.shape.replace('->', '→')} | {r.parameters:,} |" for r in layers]
    return "\n".join(["| layer | shape | parameters |", "|---|---|--:|", *rows])


def draw_snapshot(snap: RunSnapshot, fallback_s: float = POLL_SECONDS) -> None:
    # One keyed container per part, each always drawn (empty or not): a warning or tile row that comes or goes would
    # shift every element after it, and Streamlit would remount the streaming charts, losing the user's zoom.
    with st.container(key="live_status"):
        draw_status(snap, fallback_s)
    with st.container(key="live_progress"):
        draw_progress(snap)
    with st.container(key="live_tiles"):
        if snap.status != RunStatus.QUEUED:  # all dashes while queued; every element a queued tab redraws costs
            draw_tiles(snap)
    with st.container(key="live_system"):
        draw_system_strip(snap)
    with st.container(key="live_charts"):
        draw_charts(snap)
    draw_model(snap)


def live_panel(get_snapshot, was_active: bool, wait_for_epoch=None) -> None:
    """Draw the run; while it is active the live feed keeps the drawn panel current and reruns this fragment when
    its shape changes; when the run's activity changes, rerun the whole page (buttons change).
    wait_for_epoch(epochs_seen, timeout) -> snapshot lets a redraw wait for an epoch about to end (RunManager's)."""

    def body() -> None:
        snap = latest_snapshot(get_snapshot, wait_for_epoch)
        if snap is None:
            st.warning("This run is no longer available.")
            return
        # without the feed's route the element redraws the panel itself, as often as the poll did
        fallback = QUEUED_POLL_SECONDS if snap.status == RunStatus.QUEUED else next_poll_seconds(snap)
        draw_snapshot(snap, fallback)
        if snap.active != was_active:
            st.rerun()

    st.fragment(body)()
