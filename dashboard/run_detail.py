"""One stored run, opened from the History page: summary, actions, curves, epochs, config, evaluation, export."""
from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import streamlit as st

from core.config import ConfigError, Phase, RunConfig, RunStatus, schedule_text
from core.engine.data import CLASS_NAMES
from core.engine.devices import DeviceError, resolve_device
from core.engine.evaluate import ModelLoadError
from core.runs.models import load_run_model
from core.engine.health import learning_warnings
from core.exchange.csv_export import run_epochs_csv
from core.exchange.share_links import config_json
from core.exchange.weights import run_weights_bytes, weights_filename
from core.runs.history import rerun_phases, stored_run
from core.runs.manager import CONTINUABLE
from core.runs.store import Store, StoreError
from core.engine.train import median_timed_epoch

from . import charts, pages
from .controls import lr_choices
from .evaluation_panel import evaluation_panel
from .share import share_url
from .status import TROUBLE, run_status_label
from .stream_chart import stream_chart
from .text import md



def open_in_train_page(run_id: str) -> None:
    pages.switch_to(pages.TRAIN, run=run_id)


def run_detail(store: Store, run_id: str, has_weights: bool, on_delete) -> None:
    try:
        run = store.get_run(run_id)
        epochs = store.epochs(run_id)
    except KeyError:
        st.warning(f"Run {md(run_id)} is no longer in the history.")
        return
    except StoreError as exc:
        st.error(md(exc))
        return
    try:
        config, phases = stored_run(run, epochs)
    except ConfigError as exc:  # a row from an older version, an unchecked upload, or edited by hand
        st.error(f"Run {md(run_id)} cannot be opened: {md(exc)}. Its row in the run database does not describe a "
                 f"run this app can show or train; delete it, or fix the row.")
        st.button("Delete…", key="hist_delete", on_click=on_delete, args=([run_id],),
                  help="Delete this run, its epochs and its weights.")
        return
    status = run["status"]
    st.markdown(f"**{md(run_status_label(status))}** · run {md(run_id)} · {config.describe(phases)} · "
                f"{md(run['device'] or config.device)}")
    created = datetime.fromtimestamp(run["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
    st.caption(f"Started {created} from the {md(run['origin'] or 'unknown')} · data: {md(run['data_source'] or '?')} "
               f"· {run['parameters'] or 0:,} parameters · torch {md(run['torch_version'] or '?')}")
    notes = [((st.warning if status in TROUBLE else st.caption), md(run["message"]))] if run["message"] else []
    notes += [(st.warning, warning) for warning in
              learning_warnings([SimpleNamespace(**e) for e in epochs], len(CLASS_NAMES[config.dataset]))]
    slot = st.empty()  # notes come while a run trains or as it ends: in one slot they do not move the charts below,
    if notes:  # which the browser would then build anew instead of appending to them
        with slot.container():
            for say, text in notes:
                say(text)

    val = [e["val_acc"] for e in epochs]
    median = median_timed_epoch(epochs)
    tiles = st.columns(5)
    tiles[0].metric("Epochs", len(epochs))
    tiles[1].metric("Best val accuracy", f"{max(val):.2%}" if val else "–")
    tiles[2].metric("Final val accuracy", f"{val[-1]:.2%}" if val else "–")
    tiles[3].metric("Test accuracy", f"{run['test_acc']:.2%}" if run["test_acc"] is not None else "–")
    tiles[4].metric("Median epoch", f"{median:.2f} s" if median is not None else "–")

    draw_actions(run, config, epochs, has_weights, on_delete)

    curves, table, settings, evaluation, export = st.tabs(["Curves", "Epochs", "Config", "Evaluation",
                                                            "Export & share"])
    with curves:
        if epochs:
            frame = charts.epochs_frame(epochs)
            left, right = st.columns(2)
            # streamed: while the run trains (History redraws on each stored epoch) new epochs are appended points
            with left:
                stream_chart(charts.loss_figure(frame, len(epochs)), key="detail_loss", series=run_id,
                             config=charts.CONFIG)
            with right:
                stream_chart(charts.accuracy_figure(frame, len(epochs)), key="detail_acc", series=run_id,
                             config=charts.CONFIG)
        else:
            st.info("This run recorded no epochs.")
    with table:
        st.dataframe(charts.epochs_frame(epochs), hide_index=True, key="detail_epochs")
    with settings:
        st.json(config.to_dict())
        st.caption(f"Learning-rate schedule (epochs@lr per phase): {schedule_text(run['schedule']) or '–'}")
    with evaluation:
        draw_evaluation(store, run, has_weights)
    with export:
        draw_export(store, run, config, phases, has_weights)


def draw_actions(run: dict, config: RunConfig, epochs: list[dict], has_weights: bool, on_delete) -> None:
    run_id, status = run["id"], run["status"]
    can_continue = status in CONTINUABLE and has_weights and bool(epochs)
    cols = st.columns([1, 2, 1, 1.3, 1], vertical_alignment="bottom")
    if "hist_cont_epochs" not in st.session_state:
        st.session_state.hist_cont_epochs = 5
    last_lr = float(run["schedule"][-1][1]) if run["schedule"] else config.lr
    if st.session_state.get("hist_cont_for") != run_id:  # a newly opened run starts from its own last lr
        st.session_state.hist_cont_for = run_id
        st.session_state.hist_cont_lr = last_lr
    cols[0].number_input("More epochs", 1, 200, key="hist_cont_epochs", disabled=not can_continue)
    cols[1].select_slider("Learning rate", lr_choices(last_lr), key="hist_cont_lr",
                          format_func=lambda v: f"{v:g}", disabled=not can_continue)
    why_not = ("" if can_continue else
               "it is still running" if status == RunStatus.RUNNING else
               "it kept no weights" if not has_weights else
               f"a {md(status)} run cannot be continued; re-run it instead")
    if cols[2].button("Continue", key="hist_continue", type="primary", disabled=not can_continue,
                      help="Train this model further from its kept weights; the Train page shows it live."
                      if can_continue else f"Cannot continue: {why_not}."):
        continue_in_train_page(run_id, int(st.session_state.hist_cont_epochs), float(st.session_state.hist_cont_lr),
                               error_key="hist_action_error", refused="Cannot continue")
    device_note = ""
    try:
        resolve_device(config.device)
    except DeviceError:
        device_note = f" ({config.device} is not available here, so on the best device that is)"
    if cols[3].button("Re-run same config", key="hist_rerun",
                      help=f"Train a new model with these settings and schedule "
                           f"{schedule_text(rerun_phases(run))}{device_note}."):
        rerun(run, config, bool(device_note))
    cols[4].button("Delete…", key="hist_delete", on_click=on_delete, args=([run_id],),
                   disabled=status == RunStatus.RUNNING, help="Delete this run, its epochs and its weights.")
    error = st.empty()  # a slot, like the notes above
    if st.session_state.get("hist_action_error"):
        error.error(st.session_state.hist_action_error)
        st.session_state.hist_action_error = ""


def continue_in_train_page(run_id: str, epochs: int, lr: float, error_key: str, refused: str) -> None:
    """Continue a stored run and show it on the Train page; when it cannot be continued, `refused: why` goes to
    st.session_state[error_key] and the page is drawn again to say so."""
    from .state import get_manager, session_owner

    try:  # this tab continues it: here its Stop acts at once, another tab is asked to confirm
        get_manager().continue_run(run_id, epochs, lr, owner=session_owner())
    except (RuntimeError, KeyError, ValueError) as exc:
        st.session_state[error_key] = f"{refused}: {md(exc)}"
        st.rerun()
    open_in_train_page(run_id)


def rerun(run: dict, config: RunConfig, use_auto: bool) -> None:
    from .state import get_manager, session_owner

    if use_auto:
        config = config.replace(device="auto")
    phases = tuple(Phase(e, lr) for e, lr in rerun_phases(run))
    new_id = get_manager().start(config, owner=session_owner(), phases=phases)
    open_in_train_page(new_id)


def draw_evaluation(store: Store, run: dict, has_weights: bool) -> None:
    if not has_weights:
        st.info("This run kept no weights (runs save them when a phase finishes or is stopped), so it cannot "
                "be evaluated.")
        return
    try:
        model = load_run_model(store, run["id"])
    except (ModelLoadError, StoreError) as exc:
        st.error(f"Cannot load this run's weights: {md(exc)}")
        return
    saved = store.checkpoint_times().get(run["id"], 0.0)
    stored_epochs = store.epochs(run["id"])
    note = ""
    if model.epochs_done is not None and stored_epochs and model.epochs_done < stored_epochs[-1]["epoch"]:
        note = (f"The kept weights are from epoch {model.epochs_done}: the run's later epochs ended without "
                f"saving weights ({md(run['status'])}).")
    evaluation_panel(model.config, model.state_dict, f"{store.path}|{run['id']}|{saved}", key="detail_eval",
                     recorded_test_acc=run["test_acc"] if not note else None, trained_on=run["data_source"],
                     weights_note=note)


def draw_export(store: Store, run: dict, config: RunConfig, schedule: tuple[Phase, ...], has_weights: bool) -> None:
    run_id = run["id"]
    cols = st.columns(3)
    cols[0].download_button("History (CSV)", data=lambda: run_epochs_csv(store, run_id),
                            file_name=f"run-{run_id}-epochs.csv", mime="text/csv", key="detail_csv",
                            on_click="ignore", help="One row per epoch, with the run's config in columns.")
    cols[1].download_button("Weights (.pt)", data=lambda: run_weights_bytes(store, run_id),
                            file_name=weights_filename(run), mime="application/octet-stream", key="detail_weights",
                            on_click="ignore", disabled=not has_weights,
                            help="The state_dict with its config, history and optimizer state "
                                 "(torch.load(..., weights_only=True) reads it). Load it back below the table."
                            if has_weights else "This run kept no weights.")
    cols[2].download_button("Config (JSON)", data=config_json(config), file_name=f"run-{run_id}-config.json",
                            mime="application/json", key="detail_config", on_click="ignore")
    st.markdown("**Share link**: opens the Train page with these settings in the sidebar.")
    st.code(share_url(config, pages.HISTORY.url_path, schedule), language=None, wrap_lines=True)
    with st.expander("Python: load the weights file"):
        st.code(LOAD_SNIPPET.format(name=weights_filename(run), sizes=json.dumps(list(config.hidden_sizes))),
                language="python")


LOAD_SNIPPET = """import torch
from core.config import RunConfig
from core.engine.evaluate import build_model

saved = torch.load("{name}", weights_only=True)
model = build_model(RunConfig.from_dict(saved["config"]), saved["state_dict"])  # hidden sizes {sizes}
probabilities = model(images.flatten(1).float() / 255).softmax(1)
"""
