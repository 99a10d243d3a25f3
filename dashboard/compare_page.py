"""The Compare page: one experiment on several legs (device, CPU threads, data pipeline), side by side,
and (its second tab, dashboard/speedup_map_page.py) a speedup map over model and batch sizes.

Legs run one after another through the shared RunManager (each in a worker process). The page only draws
snapshots, from a fragment that polls while a comparison is running; `?cmp=<id>` in the URL reattaches after a
refresh.
"""
from __future__ import annotations

import math
import os

import pandas as pd
import streamlit as st

from core.studies.compare import DEFAULT_TARGET
from core.studies.comparisons import ComparisonSnapshot
from core.studies.legs import Leg, default_legs, duplicate_legs_message
from core.config import PIPELINES, TUTORIAL_SCHEDULE, ConfigError, Phase, RunConfig, RunStatus
from core.engine.devices import DeviceError, list_devices

from . import compare_charts as charts
from . import controls
from .controls import COMPARE, PIPELINE_LABELS
from .figure_cache import cached_figures
from .lab import Lab, get_lab, live_snapshot, read_snapshot, stored_picker
from .speedup_map_page import speedup_section
from .state import get_manager, session_owner
from .stream_chart import stream_chart
from .status import TROUBLE, status_label
from .text import md

# The comparison's charts, top row then bottom row: accuracy against seconds and per epoch, loss, epoch times.
CHART_KEYS = ("cmp_chart_time", "cmp_chart_acc", "cmp_chart_loss", "cmp_chart_epochs")
# The experiment's settings are the shared sidebar's (controls.COMPARE: cmp_* keys, Train's defaults); the page's own:
DEFAULTS = {"cmp_tutorial": False, "cmp_target": DEFAULT_TARGET * 100, "cmp_pipeline": False,
            "cmp_new_pipeline": "resident", "cmp_new_threads": "default", "cmp_new_graphs": True}


def init_state() -> None:
    controls.init_state(sidebar=COMPARE)
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value
    if "cmp_legs" not in st.session_state:
        st.session_state.cmp_legs = [leg.spec() for leg in default_legs()]


# -- the experiment and its legs --------------------------------------------------------------------
def base_config() -> RunConfig:
    return controls.config_from_state(COMPARE)


def phases() -> tuple[Phase, ...]:
    s = st.session_state
    return TUTORIAL_SCHEDULE if s.cmp_tutorial else (Phase(int(s.cmp_epochs), float(s.cmp_lr)),)


def chosen_legs() -> list[Leg]:
    return [Leg.parse(spec) for spec in st.session_state.cmp_legs]


def pipeline_twin(legs: list[Leg]) -> Leg:
    """The tutorial-pipeline leg the switch adds: on the GPU leg if there is one, else the first CPU leg."""
    resident = [leg for leg in legs if leg.pipeline == "resident"]
    gpu = [leg for leg in resident if leg.device != "cpu"]
    ref = gpu[0] if gpu else resident[0] if resident else Leg("cpu", 1)
    return Leg(ref.device, ref.threads, "dataloader")


def effective_legs() -> list[Leg]:
    legs = chosen_legs()
    if st.session_state.cmp_pipeline:
        twin = pipeline_twin(legs)
        if twin not in legs:
            legs.append(twin)
    return legs


def add_leg() -> None:
    s = st.session_state
    threads = None if s.cmp_new_threads == "default" else int(s.cmp_new_threads)
    try:
        leg = Leg(s.cmp_new_device, threads, s.cmp_new_pipeline, bool(s.cmp_new_graphs))
    except ConfigError as exc:
        s.cmp_error = f"Cannot add that leg: {md(exc)}"
        return
    repeats = duplicate_legs_message([*chosen_legs(), leg], get_manager().cpu_threads)
    if repeats:
        s.cmp_error = f"Not added: {md(repeats)}"
        return
    s.cmp_legs = [*s.cmp_legs, leg.spec()]
    s.cmp_error = ""


def remove_leg(index: int) -> None:
    legs = list(st.session_state.cmp_legs)
    if len(legs) > 1:
        del legs[index]
    st.session_state.cmp_legs = legs


def reset_legs() -> None:
    st.session_state.cmp_legs = [leg.spec() for leg in default_legs()]


def start_comparison() -> None:
    s = st.session_state
    try:
        comparison_id = get_lab().comparisons.start(base_config(), effective_legs(), phases(), owner=session_owner())
    except (ConfigError, DeviceError, RuntimeError) as exc:
        s.cmp_error = f"Cannot start the comparison: {md(exc)}"
        return
    s.cmp_error = ""
    st.query_params["cmp"] = comparison_id


def stop_comparison() -> None:
    comparison_id = st.query_params.get("cmp")
    if comparison_id:
        get_lab().comparisons.stop(comparison_id)


# -- the page ---------------------------------------------------------------------------------------
def compare_page() -> None:
    init_state()
    lab = get_lab()
    settings_sidebar()
    st.title("Compare devices and pipelines")
    compare_tab, map_tab = st.tabs(["⚖️ Compare runs", "🗺️ Speedup map"])
    with compare_tab:
        comparison_section(lab)
    with map_tab:
        speedup_section(lab)


def settings_sidebar() -> None:
    controls.settings_sidebar(COMPARE)
    st.sidebar.checkbox("Tutorial schedule (5 @ 0.5, then 5 @ 0.1)", key="cmp_tutorial",
                        help="Overrides epochs and learning rate with the tutorial's two fit() calls.")


def comparison_section(lab: Lab) -> None:
    comparison_id = st.query_params.get("cmp")
    snap, problem = read_snapshot(lambda: lab.comparisons.snapshot(comparison_id)) if comparison_id else (None, "")
    busy = lab.busy()
    st.markdown(
        "The same experiment on two or more **legs**: a leg is a device, a CPU thread count and a data pipeline. "
        "Every leg starts from the same weights and sees the same batches (same seed), so the curves are comparable "
        "epoch by epoch. Legs run **one after the other**, never at once, so one leg's work cannot slow down another "
        "leg's clock. The first leg is the baseline for speedups.")
    legs_editor(busy)
    st.slider("Target validation accuracy for *time to target* (%)", 80.0, 99.5, step=0.5, key="cmp_target")
    # Slots (st.empty) for what comes and goes above the live part: an element that appears above it moves it, and
    # the browser then builds its streamed charts anew (a stored comparison's picker appears when the first ends).
    error, picker = st.empty(), st.empty()
    if st.session_state.get("cmp_error"):
        error.error(st.session_state.cmp_error)
    cols = st.columns([2, 1, 5], vertical_alignment="center")
    cols[0].button("Run comparison", type="primary", key="cmp_run", on_click=start_comparison, disabled=busy,
                   width="stretch", help="Train every leg in turn with the sidebar's settings.")
    if snap is not None and snap.active:
        cols[1].button("Stop", key="cmp_stop", on_click=stop_comparison, help="Stops the running leg within a "
                       "batch and skips the rest; finished epochs are kept.")
    elif busy:
        cols[2].caption("Another comparison or a speedup map is measuring now; wait for it so the timings stay clean.")
    recent = lab.comparisons.recent()
    if recent:
        with picker.container():
            stored_picker(recent, "Earlier comparisons", "Comparison", "cmp")
    if problem:
        st.error(f"Comparison {md(comparison_id)} cannot be opened: {md(problem)}")
    elif comparison_id and snap is None:
        st.error(f"No comparison {md(comparison_id)} in this server or its history.")
    elif snap is not None:
        live_snapshot(lambda: lab.comparisons.snapshot(comparison_id), draw_comparison, snap.active,
                      "This comparison is no longer available.", key="cmp_poll")


def legs_editor(busy: bool) -> None:
    devices = list_devices()
    available = [d for d in devices if d.available]
    labels = {d.kind: d.label for d in devices}
    legs = chosen_legs()
    st.subheader("Legs")
    for d in devices:
        if not d.available and d.kind != "mps":
            hint = (f" Without a GPU the default legs compare 1 CPU thread with all {os.cpu_count()} threads."
                    if d.kind == "cuda" and not any(x.kind != "cpu" for x in available) else "")
            st.caption(f"✗ {d.kind.upper()} leg unavailable: {md(d.reason)}.{hint}")
    for i, leg in enumerate(legs):
        row = st.columns([8, 1], vertical_alignment="center")
        row[0].markdown(f"**{i + 1}.** {leg.label()}" + ("  — *baseline*" if i == 0 else ""))
        row[1].button("✕", key=f"cmp_rm_{i}", on_click=remove_leg, args=(i,), disabled=busy or len(legs) <= 1,
                      help="Remove this leg")
    if st.session_state.cmp_pipeline:
        twin = pipeline_twin(legs)
        if twin not in legs:
            st.markdown(f"**{len(legs) + 1}.** {twin.label()}  — *added by the pipeline switch*")
    st.toggle("Pipeline switch: add a leg with the tutorial's pipeline", key="cmp_pipeline", disabled=busy,
              help="Per-sample PIL image + ToTensor, a DataLoader, and a copy of every batch to the device, beside "
                   "the resident pipeline (the whole split on the device as one tensor, batches by indexing). "
                   "It is tens of times slower on the CPU, so it adds a minute or so on full MNIST.")
    with st.expander("Add a leg", expanded=False):
        if st.session_state.get("cmp_new_device") not in [d.kind for d in available]:
            st.session_state.cmp_new_device = available[0].kind
        cols = st.columns([3, 2, 4, 2], vertical_alignment="bottom")
        cols[0].selectbox("Device", [d.kind for d in available], key="cmp_new_device", format_func=labels.get)
        cols[1].selectbox("CPU threads", ["default", *range(1, (os.cpu_count() or 1) + 1)], key="cmp_new_threads",
                          help="torch intra-op threads; 'default' keeps the training process's setting.")
        cols[2].selectbox("Pipeline", PIPELINES, key="cmp_new_pipeline", format_func=PIPELINE_LABELS.get)
        if any(d.kind == "cuda" for d in available):
            st.checkbox("CUDA graph (one launch per step; off = eager)", key="cmp_new_graphs")
        cols[3].button("Add leg", key="cmp_add", on_click=add_leg, disabled=busy)
        st.button("Reset to the default legs", key="cmp_reset", on_click=reset_legs, disabled=busy)


def draw_comparison(snap: ComparisonSnapshot) -> None:
    target = float(st.session_state.cmp_target) / 100
    leg_runs = snap.leg_runs()
    summary = snap.summary(target)
    draw_progress(snap)
    notes = [(st.warning, md(snap.overlap))] if snap.overlap else []
    if snap.status == RunStatus.FAILED:
        notes.append((st.error, f"The comparison failed: {md(snap.message)}"))
    for row in summary.legs:
        if row.status in TROUBLE and row.message:
            notes.append((st.warning, f"Leg {row.index + 1} ({md(row.label)}) {row.status}: {md(row.message)}"))
    slot = st.empty()  # notes that appear while legs train must not move the streamed charts below (new elements)
    if notes:
        with slot.container():
            for say, text in notes:
                say(text)
    draw_comparison_charts(snap, leg_runs)
    st.markdown("#### Results")
    if snap.active:  # a table widget redrawn every poll took more CPU than the leg it was timing: plain lines
        st.markdown(live_lines(snap, summary))
    else:
        st.dataframe(results_table(snap, summary), hide_index=True, width="stretch",
                     column_config=results_columns(summary.target))
        devices = sorted({row.device for row in summary.legs if row.device})
        if devices:
            st.caption(f"Device{'s' if len(devices) > 1 else ''}: {'; '.join(devices)}.")
    st.caption("Epoch times are wall clock, read after synchronizing with the device (GPU kernels run "
               "asynchronously). Each leg's first epoch is its **warm-up** (first allocations, BLAS/cuBLAS "
               "initialisation, CUDA-graph capture): it is shown apart and never averaged in. The CUDA context is "
               "created while a leg loads, before its first epoch. Time to target counts training wall clock from "
               "the leg's first batch, warm-up included.")
    if summary.contention_text:
        st.warning(summary.contention_text)
    if summary.same_start_text:  # the check that must hold: an alarm when it does not
        {True: st.success, False: st.error}.get(summary.same_start_ok, st.caption)(summary.same_start_text)
    if summary.drift_text:  # expected float drift: information, never an alarm
        st.info(summary.drift_text)
    if summary.pipeline_text:
        st.info(summary.pipeline_text)
    thread_note(summary)


def draw_progress(snap: ComparisonSnapshot) -> None:
    planned = snap.planned_epochs
    done = sum(len(r.epochs) for r in snap.runs if r is not None)
    total = planned * len(snap.legs)
    text = status_label(snap.status)
    if snap.active:
        run = snap.runs[snap.current] if 0 <= snap.current < len(snap.runs) else None
        progress = run.progress if run is not None and run.active else None
        fraction = progress.batch / progress.batches if progress and progress.batches else 0.0
        st.progress(min(1.0, (done + fraction) / max(total, 1)), text=f"{md(text)}: {md(snap.stage())}")
    else:
        text = md(text)
        if snap.message and snap.status != RunStatus.FAILED:
            text += f": {md(snap.message)}"
        st.markdown(f"**{text}** · comparison {md(snap.comparison_id)} · {snap.base.describe()} · "
                    f"{len(snap.legs)} legs")


def draw_comparison_charts(snap: ComparisonSnapshot, leg_runs) -> None:
    # Streamed (dashboard/stream_chart.py): each chart stays one element in the browser, a new epoch travels as
    # appended points and the user's zoom and legend clicks survive. The figures are rebuilt only when an epoch
    # arrives (building the four costs ~0.1 s of server CPU, which a leg being timed feels); a poll in between gives
    # each chart the message it had, which Streamlit does not hand over again.
    def build():
        waiting = snap.legs[len(leg_runs):] if snap.active else ()  # their traces are there before they start
        legs = charts.series(leg_runs, waiting)
        planned = max([snap.planned_epochs, *[len(r.epochs) for r in leg_runs]])
        return (charts.acc_vs_time_figure(legs), charts.val_acc_figure(legs, planned),
                charts.val_loss_figure(legs, planned), charts.epoch_time_figure(legs))

    progress = (tuple(len(r.epochs) for r in leg_runs), snap.planned_epochs, snap.active)
    figures = cached_figures("cmp_figures", snap.comparison_id, progress, build)
    cells = [*st.columns(2), *st.columns(2)]
    for cell, key, figure in zip(cells, CHART_KEYS, figures):
        with cell:
            stream_chart(figure, key=key, series=snap.comparison_id, config=charts.CONFIG)


def _num(value, fmt: str, none: str = "–") -> str:
    return none if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, fmt)


def same_start_cell(row) -> str:
    if row.index == 0:
        return "baseline"
    if row.same_start is None:
        return "not checked"
    if not row.weights_match:
        return "✗ weights differ"
    worst = max(row.start_loss_rel_diff, row.start_grad_rel_diff)
    return f"{'✓' if row.same_start else '✗'} {worst:.1e}" if worst else "✓ identical"


def results_table(snap: ComparisonSnapshot, summary) -> pd.DataFrame:
    """One row per leg, in columns narrow enough for a 1400 px window (the headers' help says the rest)."""
    rows = []
    for row in summary.legs:
        reached = (f"{row.time_to_target_s:.2f} (ep {row.target_epoch})" if row.time_to_target_s is not None
                   else "not reached" if row.epochs else "–")
        rows.append({
            "leg": f"{row.index + 1}. {row.label}" + ("" if row.status == RunStatus.FINISHED else f" ({row.status})"),
            "warm-up s": _num(row.warmup_epoch_s, ".3f"),
            "median s": _num(row.median_epoch_s, ".3f", "2+ epochs" if row.epochs == 1 else "–"),
            "samples/s": _num(row.samples_per_s, ",.0f"),
            "speedup": f"{row.speedup:.2f}x" if row.speedup else "–",
            "to target s": reached,
            "val acc": _num(row.final_val_acc, ".2%"),
            "test acc": _num(row.test_acc, ".2%"),
            "same start": same_start_cell(row),
            "drift": "baseline" if row.index == 0 else _num(row.val_loss_drift, ".1e"),
            "others' CPU": _num(row.other_cpu_share, ".0%"),
        })
        if any(leg.device == "cuda" for leg in snap.legs):
            rows[-1]["CUDA graph"] = row.graphs or "–"
    for i in range(len(summary.legs), len(snap.legs)):
        rows.append({"leg": f"{i + 1}. {snap.legs[i].label()} ({'waiting' if snap.active else 'not run'})"})
    return pd.DataFrame(rows).fillna("")


def results_columns(target: float) -> dict:
    """Short headers for results_table, with what each means in its help."""
    text = st.column_config.TextColumn
    return {
        "leg": text("leg", help="Device · CPU threads · data pipeline; a leg that did not finish says how it "
                                "ended."),
        "warm-up s": text("warm-up s", help="The first epoch's seconds: one-off costs, never averaged in."),
        "median s": text("median s", help="Median epoch seconds, warm-up epoch excluded."),
        "samples/s": text("samples/s", help="Training samples per second at the median epoch time."),
        "speedup": text("speedup", help="Leg 1's median epoch time / this leg's."),
        "to target s": text(f"to {target:.1%} s".replace(".0%", "%"),
                            help="Training wall clock (warm-up included) until validation accuracy reached the "
                                 "target, and the epoch it did."),
        "val acc": text("val acc", help="Validation accuracy after the last epoch."),
        "test acc": text("test acc", help="Accuracy on the official test split."),
        "same start": text("same start", help="Same initial weights (checksum) as leg 1, and the largest relative "
                                              "difference of the first batch's loss and gradient: ✓ within 1e-5."),
        "drift": text("drift", help="Largest per-epoch relative validation-loss difference from leg 1: float "
                                    "rounding compounded over the SGD steps, expected."),
        "others' CPU": text("others' CPU", help="Share of all cores other processes kept busy while the leg was "
                                                "timed; above 30 % its times are inflated."),
    }


def live_lines(snap: ComparisonSnapshot, summary) -> str:
    lines = []
    for row in summary.legs:
        median = f", median epoch {row.median_epoch_s:.3f} s" if row.median_epoch_s else ""
        speed = f" ({row.speedup:.2f}x leg 1)" if row.speedup and row.index else ""
        acc = f", val acc {row.final_val_acc:.2%}" if row.final_val_acc is not None else ""
        lines.append(f"- **{row.index + 1}. {row.label}**: {row.epochs}/{snap.planned_epochs} epochs{acc}{median}"
                     f"{speed}")
    for i in range(len(summary.legs), len(snap.legs)):
        lines.append(f"- **{i + 1}. {snap.legs[i].label()}**: waiting for its turn")
    return "\n".join(lines) + "\n\nThe full table appears when the last leg ends."


def thread_note(summary) -> None:
    timed = [(Leg.parse(r.spec), r.median_epoch_s) for r in summary.legs if r.median_epoch_s]
    cpu = [(leg, s) for leg, s in timed if leg.device == "cpu" and leg.pipeline == "resident" and leg.threads]
    one = [s for leg, s in cpu if leg.threads == 1]
    many = [s for leg, s in cpu if leg.threads > 1]
    if one and many and min(many) > min(one):
        st.caption("More CPU threads were slower here. At small sizes each matrix product is tiny, so splitting it "
                   "across threads costs more in hand-offs than it saves; and when other processes share the cores "
                   "(this page's server and browser count), a thread that waits for a descheduled partner idles. "
                   "The speedup map shows at which sizes threads start to pay.")
