"""The Train page: settings in the sidebar, Train / Tutorial schedule / Stop / Continue, the live panel."""
from __future__ import annotations

import os

import streamlit as st

from core.config import TUTORIAL_SCHEDULE, ConfigError, Phase
from core.engine.data import availability_note, missing_data_dir
from core.engine.devices import DeviceError, resolve_device

from .controls import (DEFAULTS, init_state, lr_choices, planned_phases, settings_sidebar, validated_config,
                       widget_values)
from .live_panel import live_panel
from .share import apply_share_link
from .state import current_run_id, get_manager, owns, session_owner, set_current_run
from .text import md


def _start(phases: tuple[Phase, ...] | None = None) -> None:
    """Start the sidebar's settings: the given phases, else the sidebar's epochs and lr and any later phases."""
    config, error = validated_config()
    if config is None:
        st.session_state.start_error = f"Invalid setting: {md(error)}"
        return
    try:
        resolve_device(config.device)
    except DeviceError as exc:
        st.session_state.start_error = f"{md(exc)}. Pick another device in the sidebar."
        return
    run_id = get_manager().start(config, owner=session_owner(), phases=phases or planned_phases(config))
    st.session_state.start_error = ""
    st.session_state.share_message = None  # the link's settings are in use now: its notice has done its job
    st.session_state.attached_run = run_id
    set_current_run(run_id)


def start_run() -> None:
    _start()


def start_tutorial() -> None:
    """The tutorial's experiment: 784-32-10 ReLU, batch 100, SGD, fit(5, 0.5) then fit(5, 0.1)."""
    device, dataset = st.session_state.cfg_device, st.session_state.cfg_dataset
    tutorial = DEFAULTS.replace(epochs=TUTORIAL_SCHEDULE[0].epochs, lr=TUTORIAL_SCHEDULE[0].lr)
    for key, value in widget_values(tutorial).items():
        st.session_state[key] = value
    st.session_state.cfg_device, st.session_state.cfg_dataset = device, dataset
    st.session_state.cfg_then = TUTORIAL_SCHEDULE[1:]  # the sidebar shows the whole schedule; Train repeats it
    _start(TUTORIAL_SCHEDULE)


def stop_run() -> None:
    run_id = current_run_id()
    st.session_state.confirm_stop = None
    if run_id:
        get_manager().stop(run_id)


def ask_stop(run_id: str | None) -> None:
    st.session_state.confirm_stop = run_id


def continue_run() -> None:
    run_id = current_run_id()
    try:
        get_manager().continue_run(run_id, int(st.session_state.cont_epochs), float(st.session_state.cont_lr),
                                   owner=session_owner())
        st.session_state.start_error = ""
    except (RuntimeError, KeyError, ConfigError) as exc:
        st.session_state.start_error = f"Cannot continue: {md(exc)}"


def new_run() -> None:
    st.session_state.attached_run = None
    set_current_run(None)


def read_snapshot(manager, run_id: str):
    """(snapshot or None, '' or why the stored run cannot be shown): a row that no longer validates is a message."""
    try:
        return manager.snapshot(run_id), ""
    except ConfigError as exc:
        return None, str(exc)


def attach_to_url_run(run_id: str | None) -> None:
    """After a refresh or an opened link, show the settings of the run named in the URL (once)."""
    if not run_id or st.session_state.get("attached_run") == run_id:
        return
    st.session_state.attached_run = run_id
    snap, _ = read_snapshot(get_manager(), run_id)
    if snap is not None:
        init_state(snap.config, force=True)


def train_page() -> None:
    apply_share_link()  # a share link's settings fill the sidebar once (invalid ones are reported, not applied)
    manager = get_manager()
    manager.warm_up()  # a worker reaped while nobody trained starts warming while settings are picked
    run_id = current_run_id()
    attach_to_url_run(run_id)
    settings_sidebar()
    snap, problem = read_snapshot(manager, run_id) if run_id else (None, "")
    busy = snap is not None and snap.active
    st.sidebar.button("Train", type="primary", key="train", on_click=start_run, width="stretch", disabled=busy,
                      help="Train a new model with these settings.")
    st.sidebar.button("Tutorial schedule (5 @ 0.5, then 5 @ 0.1)", key="tutorial", on_click=start_tutorial,
                      width="stretch", disabled=busy,
                      help="The tutorial's experiment: 784-32-10 ReLU MLP, batch 100, SGD; "
                           "fit(5 epochs, lr 0.5) then fit(5 epochs, lr 0.1).")

    st.title("Train a feedforward network")
    # Every part below sits in a keyed container that is always drawn: an element that comes or goes shifts the
    # position of everything after it, and Streamlit then remounts the live charts (the streaming is lost).
    with st.container(key="page_messages"):
        if st.session_state.get("start_error"):
            st.error(st.session_state.start_error)
        if manager.store_warning:
            st.warning(md(manager.store_warning))
    if run_id is None:
        st.markdown("Pick settings in the sidebar and press **Train**: validation loss and accuracy stream in "
                    "after every epoch. **Tutorial schedule** reproduces the tutorial (about 96–97 % validation "
                    "accuracy on MNIST). Moving a slider during a run does not disturb it; the run's link "
                    "(in the address bar) brings it back after a refresh.")
        # Runs load their data in worker processes: the store says what the last one got (e.g. the offline sample).
        dataset, data_dir = st.session_state.cfg_dataset, os.environ.get("DATA_DIR")
        note = availability_note(dataset, data_dir,
                                 last_source=manager.store.last_data_source(dataset) if manager.store else "")
        if note:
            (st.warning if missing_data_dir(data_dir) else st.info)(md(note))
        return
    if problem:
        st.error(f"Run {md(run_id)} cannot be opened: {md(problem)}. Its row in the run database does not describe "
                 f"a run this app can show or train; delete it on the History page.")
        return
    if snap is None:
        st.error(f"No run with id {md(run_id)} in this server or its history. Start a new one from the sidebar.")
        return
    with st.container(key="run_controls"):
        run_controls(snap)
    live_panel(lambda: manager.snapshot(run_id), snap.active,
               lambda seen, timeout: manager.wait_for_epoch(run_id, seen, timeout))


MAX_CONTINUE_EPOCHS = 50


def run_controls(snap) -> None:
    if snap.active:
        stop_controls(snap)
        return
    cols = st.columns([1, 2, 1, 1], vertical_alignment="bottom")
    if snap.can_continue:
        last = last_phase(snap)
        # The controls start from the run's last phase (its own optimizer's scale of learning rate), and again
        # each time its schedule grows: a continuation's choice is what the next Continue offers.
        if st.session_state.get("cont_for") != (snap.run_id, len(snap.schedule)):
            st.session_state.cont_for = (snap.run_id, len(snap.schedule))
            st.session_state.cont_epochs = min(MAX_CONTINUE_EPOCHS, last.epochs)
            st.session_state.cont_lr = last.lr
        cols[0].number_input("More epochs", 1, MAX_CONTINUE_EPOCHS, key="cont_epochs")
        cols[1].select_slider("Learning rate", lr_choices(last.lr, st.session_state.cont_lr), key="cont_lr",
                              format_func=lambda v: f"{v:g}")
        cols[2].button("Continue", key="continue", on_click=continue_run, type="primary",
                       help="Train this model further; epoch numbers and curves continue.")
        st.caption(f"Continue trains {snap.config.optimizer} from epoch {len(snap.epochs) + 1}; it starts at lr "
                   f"{last.lr:g}, the rate of the run's last phase ({last.epochs} epoch{'s' * (last.epochs != 1)}).")
    cols[3].button("New run", key="new_run", on_click=new_run)


def stop_controls(snap) -> None:
    """Stop, at once for the tab that started (or continued) the run; from any other tab (a shared link), and for a
    run no tab started (one a manager call started without an owner), only once confirmed."""
    if owns(snap.owner):
        st.button("Stop", key="stop", on_click=stop_run, help="Stops within a batch; finished epochs are kept.")
        return
    if st.session_state.get("confirm_stop") != snap.run_id:
        st.button("Stop…", key="stop", on_click=ask_stop, args=(snap.run_id,),
                  help=f"This run was started {'in another tab or window' if snap.owner else 'outside this tab'}: "
                       f"you will be asked to confirm.")
        return
    where = "in another tab or window" if snap.owner else "outside this tab"
    st.warning(f"Run {md(snap.run_id)} ({snap.config.describe(snap.schedule)}) was started {where}, and whoever "
               f"started it may be watching. Stop it for everyone?")
    cols = st.columns([1, 1, 3])
    cols[0].button(f"Stop run {md(snap.run_id)}", key="stop_confirm", type="primary", on_click=stop_run)
    cols[1].button("Keep it training", key="stop_cancel", on_click=ask_stop, args=(None,))


def last_phase(snap) -> Phase:
    return snap.schedule[-1] if snap.schedule else Phase(snap.config.epochs, snap.config.lr)
