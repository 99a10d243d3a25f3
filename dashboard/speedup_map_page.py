"""The Speedup map (a tab of the Compare page): timed training steps over a grid of model and batch sizes on the
default legs, the speedup per cell, and how far each leg is from its FLOP floor.

A map runs as a job in a training worker, in the same device queue as runs; the tab only draws snapshots, from a
fragment that polls while the map runs; `?map=<id>` in the URL reattaches after a refresh.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core.config import ConfigError, RunStatus
from core.engine.devices import DeviceError
from core.studies.legs import Leg
from core.studies.map_jobs import MapSnapshot
from core.studies.speedup_map import (ESTIMATE_CONFIRM_S, MapGrid, contention, default_map_legs, duration_text,
                                      estimate_sentence)

from . import compare_charts as charts
from .figure_cache import cached_figures
from .lab import Lab, get_lab, live_snapshot, read_snapshot, stored_picker
from .state import get_manager
from .status import status_label
from .text import md

HIDDEN_CHOICES = (16, 32, 64, 128, 256, 512, 1024, 2048)
LAYER_CHOICES = (1, 2, 3, 4)
BATCH_CHOICES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULTS = {"map_hidden": list(MapGrid().hidden_sizes), "map_layers": list(MapGrid().layers),
            "map_batches": list(MapGrid().batch_sizes), "map_steps": MapGrid().steps}


def init_state() -> None:
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value


def chosen_grid() -> MapGrid:
    s = st.session_state
    return MapGrid([int(v) for v in s.map_hidden], [int(v) for v in s.map_layers], [int(v) for v in s.map_batches],
                   int(s.map_steps))


def start_map() -> None:
    s = st.session_state
    try:
        grid = chosen_grid()
        seconds = get_lab().maps.estimate(grid, default_map_legs())
        if seconds is not None and seconds > ESTIMATE_CONFIRM_S and not s.get("map_long_ok"):
            s.map_error = f"This map would take about {duration_text(seconds)}: tick the box to run it anyway."
            return
        map_id = get_lab().maps.start(grid, default_map_legs())
    except (ConfigError, DeviceError, RuntimeError) as exc:
        s.map_error = f"Cannot start the speedup map: {md(exc)}"
        return
    s.map_error = ""
    st.query_params["map"] = map_id


def cancel_map() -> None:
    map_id = st.query_params.get("map")
    if map_id:
        get_lab().maps.cancel(map_id)


def speedup_section(lab: Lab) -> None:
    init_state()
    map_id = st.query_params.get("map")
    snap, problem = read_snapshot(lambda: lab.maps.snapshot(map_id)) if map_id else (None, "")
    busy = lab.busy()
    legs = default_map_legs()
    st.markdown(
        f"Where does {'the GPU' if legs[-1].device != 'cpu' else 'a second CPU thread'} pay off? For every cell "
        "(hidden layers x hidden size x batch size) each leg trains a fresh model for a few untimed warm-up steps, "
        "then a fixed number of timed steps between two device synchronisations. The colour is the speedup of the "
        "second leg over the first; hover a cell for each leg's samples/s and its **FLOP-floor ratio** (measured "
        "time / (the step's matmul FLOPs / the leg's measured matmul rate)): near 1 the leg runs at its hardware's "
        "matmul speed, far above 1 per-operation overhead dominates and faster hardware cannot help.")
    st.caption("Legs: " + " vs ".join(f"{i + 1}. {leg.label()}" for i, leg in enumerate(legs)) +
               ". The map waits until no run is training, and measures one cell at a time.")
    cols = st.columns(4)
    cols[0].multiselect("Hidden sizes", HIDDEN_CHOICES, key="map_hidden", disabled=busy)
    cols[1].multiselect("Hidden layers", LAYER_CHOICES, key="map_layers", disabled=busy)
    cols[2].multiselect("Batch sizes", BATCH_CHOICES, key="map_batches", disabled=busy)
    cols[3].number_input("Timed steps per cell", 1, 1000, key="map_steps", disabled=busy)
    long_map = map_estimate(lab, legs, busy)
    if st.session_state.get("map_error"):
        st.error(st.session_state.map_error)
    buttons = st.columns([2, 1, 5], vertical_alignment="center")
    buttons[0].button("Run speedup map", type="primary", key="map_run", on_click=start_map,
                      disabled=busy or (long_map and not st.session_state.get("map_long_ok")), width="stretch")
    if snap is not None and snap.active:
        buttons[1].button("Cancel", key="map_cancel", on_click=cancel_map, help="Stops within a step; the cells "
                          "already measured are kept and stored.")
    stored_picker(lab.maps.recent(), "Stored speedup maps", "Speedup map", "map")
    if problem:
        st.error(f"Speedup map {md(map_id)} cannot be opened: {md(problem)}")
    elif map_id and snap is None:
        st.error(f"No speedup map {md(map_id)} in this server or its history.")
    elif snap is not None:
        live_snapshot(lambda: lab.maps.snapshot(map_id), draw_map, snap.active,
                      "This speedup map is no longer available.", key="map_poll")


def map_estimate(lab: Lab, legs: list[Leg], busy: bool) -> bool:
    """Show how long the chosen grid would take; True when that is over a minute (it then needs a tick)."""
    try:
        grid = chosen_grid()
    except ConfigError:
        return False  # start_map says what is wrong with the grid
    quiet = not busy and not get_manager().active_runs()  # measuring a matmul rate would slow a timed run
    seconds = lab.maps.estimate(grid, legs, measure=quiet)
    if seconds is None:
        st.caption("Time estimate: shown once nothing is training (it measures each leg's matmul rate, 0.2 s).")
        return False
    text = estimate_sentence(grid, legs, seconds)
    if seconds <= ESTIMATE_CONFIRM_S:
        st.caption(f"Estimated time: {text}.")
        return False
    st.warning(f"This map would take {text}. Nothing else can be measured meanwhile; fewer hidden sizes, layers, "
               f"batch sizes or steps make it shorter.")
    st.checkbox(f"Run it anyway (about {duration_text(seconds)})", key="map_long_ok", disabled=busy)
    return True


def draw_map(snap: MapSnapshot) -> None:
    done = len(snap.cells)
    text = f"{md(status_label(snap.status))}: {done} of {snap.total} cells"
    if snap.message:
        text += f" · {md(snap.message)}"
    if snap.active:
        st.progress(done / max(snap.total, 1), text=text)
    else:
        (st.error if snap.status == RunStatus.FAILED else st.markdown)(text)
    result = snap.as_result()
    if contention(result):
        st.warning(contention(result))
    if not result["cells"] or snap.active:  # heatmaps when it ends: drawing them would take CPU from the cells
        return
    legs = result["legs"]
    speedups, throughputs = cached_figures(
        "map_figures", snap.map_id, done,
        lambda: ([charts.speedup_heatmap(result, i) for i in range(1, len(legs))],
                 [charts.throughput_heatmap(result, i) for i in range(len(legs))]))
    for i, fig in enumerate(speedups):
        st.plotly_chart(fig, config=charts.CONFIG, key=f"map_speedup_{i}")
    cols = st.columns(len(throughputs))
    for i, fig in enumerate(throughputs):
        cols[i].plotly_chart(fig, config=charts.CONFIG, key=f"map_throughput_{i}")
    rates = ", ".join(f"{leg['label']} {leg['gemm_gflops']:.1f} GFLOP/s" for leg in legs if leg.get("gemm_gflops"))
    if rates:
        st.caption(f"Measured fp32 matmul rates (1024 x 1024): {rates}. {result['grid']['steps']} timed steps after "
                   f"{result['grid']['warmup_steps']} warm-up steps per cell and leg. The floor uses that square "
                   f"matmul's rate, so it is approximate: a ratio a little under 1 means the cell's shapes ran "
                   f"slightly faster than the reference matmul.")
    with st.expander("Cells as a table", expanded=False):
        st.dataframe(map_table(result), hide_index=True, width="stretch")


def map_table(result: dict) -> pd.DataFrame:
    rows = []
    for cell in result["cells"]:
        row = {"layers": cell["layers"], "hidden": cell["hidden"], "batch": cell["batch"]}
        for i, (leg, timing) in enumerate(zip(result["legs"], cell["legs"])):
            row[f"{i + 1}. ms/step"] = round(timing["step_ms"], 4)
            row[f"{i + 1}. samples/s"] = round(timing["samples_per_s"])
            row[f"{i + 1}. x FLOP floor"] = round(timing["floor_ratio"], 1)
        for i in range(1, len(cell["speedup"])):
            row[f"speedup {i + 1} over 1"] = round(cell["speedup"][i], 3)
        rows.append(row)
    return pd.DataFrame(rows)
