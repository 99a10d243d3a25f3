"""The History page: every stored run in a table, overlaid curves, one run opened, weights files loaded.

Reads the run store (RUNS_DB) directly, so listing runs never starts a training worker; Continue
and Re-run go through the shared RunManager and then show the run on the Train page.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.config import MAX_HIDDEN_LAYERS, MAX_HIDDEN_SIZE, Phase, RunStatus
from core.exchange.csv_export import table_csv
from core.exchange.weights import WeightsFile, WeightsFileError, import_weights, read_weights
from core.runs.history import overlay_series, runs_table
from core.runs.store import Store, StoreError, db_path_from_env

from . import history_charts
from .evaluation_panel import cached_evaluation, data_dir, evaluation_panel
from .poll import live_fragment
from .run_detail import continue_in_train_page, run_detail
from .state import current_run_id, get_manager, set_current_run
from .status import ICONS, status_cell
from .text import md

WATCH_TRAINING_S = 2.0  # how often the page looks for new epochs while a run trains
WATCH_IDLE_S = 10.0  # and for runs started elsewhere (another tab, the CLI) when none does
# runs-table key -> (column title, number format or None, width in px). Status and accuracy first: at 1,400 px
# the table shows about 900 px, and what a run reached matters more than when it ran or on which device. Layer
# count (implied by the hidden sizes), final accuracy and pipeline are in the run's details and the CSV.
COLUMNS = {
    "status": ("status", None, 110),
    "test_acc": ("test acc", "percent", 68),
    "best_val_acc": ("best val", "percent", 68),
    "run_id": ("run", None, 104),
    "dataset": ("dataset", None, 66),
    "hidden_sizes": ("hidden", None, 70),
    "activation": ("act.", None, 48),
    "optimizer": ("optimizer", None, 74),
    "lr_schedule": ("lr", None, 76),
    "batch_size": ("batch", None, 52),
    "epochs": ("epochs", None, 56),
    "median_epoch_s": ("s/epoch", "%.3f", 62),
    "created": ("when", None, 92),
    "device": ("device", None, 60),
    "origin": ("origin", None, 70),
    "peak_rss_bytes": ("peak memory", "%.0f MiB", 84),  # the training process's, sampled each second (shown in MiB)
    "mean_cpu_percent": ("CPU %", "%.0f", 52),  # its mean while training: 100 = one core busy
    "mean_gpu_percent": ("GPU %", "%.0f", 52),  # the GPU's mean utilisation while training; blank on CPU
}


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path)  # a StoreError is not cached: a repaired file is picked up on the next rerun


def history_store() -> tuple[Store | None, str]:
    path = str(db_path_from_env())
    try:
        return _open_store(path), ""
    except StoreError as exc:
        return None, str(exc)


def history_page() -> None:
    st.title("Run history")
    store, problem = history_store()
    if store is None:
        st.error(f"Run history is off: {md(problem)} Training still works on the Train page; its runs are not "
                 f"recorded until the database is usable.")
        return
    try:
        rows = runs_table(store)
    except StoreError as exc:
        st.error(f"Run history cannot be read: {md(exc)}")
        return
    except ValueError as exc:  # the store decodes each row's config and schedule: one is not JSON
        st.error(f"Run history cannot be read: a run's config or schedule in {md(store.path)} is not valid JSON "
                 f"({md(exc)}).")
        return
    if st.session_state.get("hist_flash"):
        st.success(st.session_state.hist_flash)
        st.session_state.hist_flash = ""
    by_id = {row["run_id"]: row for row in rows}
    _watch_for_changes(store, rows)
    _sanitize_state(by_id)
    if not rows:
        st.info("No runs yet. Train one on the Train page (or with `python -m core train`); every run is kept here.")
    else:
        draw_table(rows)
        draw_overlay(store, by_id)
        draw_open_run(store, by_id)
    draw_confirm_delete(store, by_id)
    draw_upload(store)


def _watch_for_changes(store: Store, rows: list[dict]) -> None:
    """Redraw the page when the store changes (a new epoch, a run ending or starting), without a reload.

    A fragment polls a one-row marker (not while the tab is hidden); only a change reruns the whole page, so an
    idle page costs a tiny query every few seconds and widget choices survive the redraw. All of it sits in one
    keyed container: a caption that came and went with the training runs moved every element below it, and
    Streamlit rebuilt the streaming charts of an open run when a run started or ended.
    """
    with st.container(key="hist_watch_box"):
        _watch_body(store, rows)


def _watch_body(store: Store, rows: list[dict]) -> None:
    try:
        seen = store.last_change()
    except StoreError:
        return
    training = sum(r["status"] == RunStatus.RUNNING for r in rows)
    if training:
        runs = f"{training} run{'s' if training > 1 else ''}"
        st.caption(f"{ICONS[RunStatus.RUNNING]} {runs} training: this page updates as epochs arrive.")

    def poll() -> float | None:
        try:
            now = store.last_change()
        except StoreError:
            return None
        if now != seen:
            st.rerun(scope="app")
        return WATCH_TRAINING_S if training else WATCH_IDLE_S

    live_fragment(poll, key="hist_watch")


def _sanitize_state(by_id: dict) -> None:
    """Drop deleted runs from the widgets' state before the widgets are drawn."""
    selected = st.session_state.get("hist_selected")
    if selected is not None:
        st.session_state.hist_selected = [r for r in selected if r in by_id]
    if "hist_open" not in st.session_state:
        wanted = current_run_id()
        st.session_state.hist_open = wanted if wanted in by_id else None
        if wanted and wanted not in by_id:
            st.warning(f"Run {md(wanted)} (from the link) is not in this history.")
    elif st.session_state.hist_open not in by_id:
        st.session_state.hist_open = None


# -- the table --------------------------------------------------------------------------------------
def draw_table(rows: list[dict]) -> None:
    filters = st.columns([1.2, 1.5, 2])
    datasets = filters[0].multiselect("Dataset", sorted({r["dataset"] for r in rows}), key="hist_f_dataset",
                                      placeholder="all datasets")
    statuses = filters[1].multiselect("Status", sorted({r["status"] for r in rows}), key="hist_f_status",
                                      placeholder="all statuses")
    text = filters[2].text_input("Search", key="hist_f_text", placeholder="run id, optimizer, device, …")
    shown = [r for r in rows if (not datasets or r["dataset"] in datasets) and
             (not statuses or r["status"] in statuses) and
             (not text or text.lower() in " ".join(str(v) for v in r.values()).lower())]
    st.session_state.hist_table_ids = [r["run_id"] for r in shown]
    frame = pd.DataFrame([{k: r[k] for k in COLUMNS} for r in shown], columns=list(COLUMNS))
    frame["status"] = frame["status"].map(status_cell)
    frame["created"] = frame["created"].str.slice(5, 16)  # "12-03 10:17": the year and seconds cost width
    frame["device"] = frame["device"].str.split(":").str[0]  # "CPU", "CUDA": the full name is in the details
    frame["peak_rss_bytes"] = frame["peak_rss_bytes"].astype("float64") / 2**20
    config = {}
    for key, (title, fmt, width) in COLUMNS.items():
        config[key] = (st.column_config.NumberColumn(title, format=fmt, width=width) if fmt else
                       st.column_config.Column(title, width=width))
    st.dataframe(frame, hide_index=True, column_config=config, key="hist_table", on_select=_table_selected,
                 selection_mode="multi-row", height=min(420, 38 + 35 * max(1, len(frame))))
    cols = st.columns([3, 1])
    cols[0].caption(f"{len(shown)} of {len(rows)} runs · click column titles to sort · tick rows to overlay them "
                    f"below · interrupted runs keep the epochs they finished")
    cols[1].download_button("All runs (CSV)", data=lambda: table_csv(rows), file_name="runs.csv", mime="text/csv",
                            key="hist_runs_csv", on_click="ignore", width="stretch")


def _table_selected() -> None:
    state = st.session_state.get("hist_table")
    ids = st.session_state.get("hist_table_ids", [])
    picked = [ids[i] for i in state.selection.rows if i < len(ids)] if state else []
    st.session_state.hist_selected = picked
    if len(picked) == 1:
        st.session_state.hist_open = picked[0]
        set_current_run(picked[0])


# -- overlay ----------------------------------------------------------------------------------------
def _label(row: dict, status: bool = True) -> str:
    return (f"{row['run_id']} · {row['dataset']} [{row['hidden_sizes']}] {row['activation']} · "
            f"{row['optimizer']} {row['lr_schedule']}" + (f" · {row['status']}" if status else ""))


def draw_overlay(store: Store, by_id: dict) -> None:
    st.subheader("Compare runs")
    st.multiselect("Runs to overlay", list(by_id), key="hist_selected", format_func=lambda r: _label(by_id[r]),
                   placeholder="pick runs here or tick them in the table")
    selected = st.session_state.get("hist_selected") or []
    cols = st.columns([1.3, 1.5, 1, 1], vertical_alignment="bottom")
    x = cols[0].radio("x-axis", ("epoch", "elapsed"), key="hist_x", horizontal=True,
                      format_func={"epoch": "epoch", "elapsed": "wall seconds"}.get)
    smoothing = cols[1].slider("Smoothing", 0.0, 0.95, 0.0, 0.05, key="hist_smooth",
                               help="Exponential moving average weight (0 = raw values).")
    log_loss = cols[2].checkbox("Log-scale loss", key="hist_log")
    if selected:
        cols[3].button(f"Delete {len(selected)} selected…", key="hist_delete_selected", on_click=_ask_delete,
                       args=(list(selected),))
    if not selected:
        st.caption("Select runs to overlay their validation curves; the legend shows the settings that differ.")
        return
    try:
        runs = [store.get_run(r) for r in selected]
        epochs = {r: store.epochs(r) for r in selected}
    except (KeyError, StoreError) as exc:
        st.error(f"Cannot read the selected runs: {md(exc)}")
        return
    unreadable = [r for r in selected if by_id[r]["problem"]]
    if unreadable:
        st.warning(f"Not drawn: {', '.join(md(r) for r in unreadable)} cannot be opened (open one below to see "
                   f"why).")
        runs = [run for run in runs if run["id"] not in unreadable]
    series = overlay_series(runs, {r: epochs[r] for r in selected if r not in unreadable}, x=x, smoothing=smoothing)
    left, right = st.columns(2)
    left.plotly_chart(history_charts.overlay_figure(series, "val_loss", x=x, log_y=log_loss),
                      config=history_charts.CONFIG, key="overlay_loss")
    right.plotly_chart(history_charts.overlay_figure(series, "val_acc", x=x), config=history_charts.CONFIG,
                       key="overlay_acc")


# -- one run ----------------------------------------------------------------------------------------
def draw_open_run(store: Store, by_id: dict) -> None:
    st.subheader("Run details")
    # No status in this label: Streamlit 1.67 keeps a selectbox's choice by its label, so a watched run that
    # finished lost its place and its detail closed.
    st.selectbox("Open a run", list(by_id), key="hist_open", index=None,
                 format_func=lambda r: _label(by_id[r], status=False),
                 on_change=_open_changed, placeholder="choose a run (or tick one row in the table)")
    run_id = st.session_state.get("hist_open")
    if run_id:
        run_detail(store, run_id, by_id[run_id]["weights_kept"], _ask_delete)


def _open_changed() -> None:
    set_current_run(st.session_state.get("hist_open"))


# -- delete -----------------------------------------------------------------------------------------
def _ask_delete(run_ids: list[str]) -> None:
    st.session_state.hist_confirm = list(run_ids)


def draw_confirm_delete(store: Store, by_id: dict) -> None:
    pending = [r for r in st.session_state.get("hist_confirm") or [] if r in by_id]
    if not pending:
        return
    epochs = sum(by_id[r]["epochs"] for r in pending)
    with st.container(border=True):
        st.warning(f"Delete {len(pending)} run(s) ({', '.join(md(r) for r in pending)}) with {epochs} epoch(s) "
                   f"and their kept weights? This cannot be undone.")
        cols = st.columns([1, 1, 4])
        cols[0].button("Yes, delete", key="hist_confirm_yes", type="primary", on_click=_delete,
                       args=(store, pending))
        cols[1].button("Cancel", key="hist_confirm_no", on_click=_ask_delete, args=([],))


def _delete(store: Store, run_ids: list[str]) -> None:
    manager = get_manager()
    deleted, refused = [], []
    for run_id in run_ids:
        try:
            # a continuation waiting in the queue is still "finished" in the store
            if store.get_run(run_id)["status"] == RunStatus.RUNNING or manager.is_active(run_id):
                refused.append(run_id)
                continue
            store.delete_run(run_id)
            deleted.append(run_id)
        except KeyError:
            deleted.append(run_id)
        except StoreError as exc:
            st.session_state.hist_flash = f"Delete failed: {md(exc)}"
            return
    st.session_state.hist_confirm = []
    st.session_state.hist_selected = [r for r in st.session_state.get("hist_selected") or [] if r not in deleted]
    if st.session_state.get("hist_open") in deleted:
        st.session_state.hist_open = None
        set_current_run(None)
    message = f"Deleted {len(deleted)} run(s)." if deleted else ""
    if refused:
        message += f" Not deleted while still running: {', '.join(md(r) for r in refused)} (stop them first)."
    st.session_state.hist_flash = message.strip()


# -- weights files ----------------------------------------------------------------------------------
# An upload is read once, when it arrives: parsed, then let go. Streamlit keeps an uploaded file's bytes in its
# upload store until the browser tab's session is shut down, and a closed tab's session is kept for reconnecting
# and then dropped without that shutdown: a 195 MB upload stayed in the server's memory (measured: +190 MiB
# after the tab closed), and was parsed again on every rerun. So the store's copy is removed and the widget's
# copy closed once the file is parsed, and a new key draws an empty uploader. The parsed model is kept where
# Streamlit frees it as soon as the tab disconnects (a session-scoped resource), until added, continued or closed.
class LoadedUpload(NamedTuple):
    name: str
    digest: str  # of the file's bytes: names its evaluation and finds it again in the history
    weights: WeightsFile


@st.cache_resource(scope="session", show_spinner=False)
def upload_slot() -> dict:
    """This tab's parsed upload, {"loaded": LoadedUpload}; emptied by Streamlit when the tab disconnects."""
    return {}


def draw_upload(store: Store) -> None:
    loaded: LoadedUpload | None = upload_slot().get("loaded")
    problem = st.session_state.get("hist_upload_error", "")
    with st.expander("Load a weights file (.pt) to evaluate or continue it", expanded=bool(loaded or problem)):
        limit_mb = st.get_option("server.maxUploadSize")  # .streamlit/config.toml: the largest model's file
        upload = st.file_uploader("Weights file downloaded from a run (Export & share tab)", type=["pt"],
                                  key=f"hist_upload_{st.session_state.get('hist_upload_n', 0)}",
                                  max_upload_size=limit_mb)
        st.caption(f"Up to {limit_mb:,} MB, the weights file of the largest model this app trains "
                   f"({MAX_HIDDEN_LAYERS} x {MAX_HIDDEN_SIZE:,} units, with Adam's state): a larger file is not a "
                   f"weights file of ours, and the browser refuses it before sending it (\"File must be ... or "
                   f"smaller\").")
        if upload is not None:
            take_upload(upload)  # reruns
        if problem:
            st.error(f"Cannot load this file: {md(problem)}")
        if loaded is not None:
            draw_loaded(store, loaded)


def take_upload(upload) -> None:
    """Parse the uploaded file (every part checked by read_weights before anything is stored), drop its bytes,
    and rerun with the result: a model to show, or the reason it was refused."""
    close_upload()
    try:
        data = upload.getvalue()
        weights = read_weights(data, name=f"'{upload.name}'")
        upload_slot()["loaded"] = LoadedUpload(upload.name, hashlib.sha256(data).hexdigest()[:16], weights)
    except WeightsFileError as exc:
        st.session_state.hist_upload_error = str(exc)
    finally:
        data = None  # noqa: F841 (the bytes' last reference here)
        forget_upload(upload)
    st.rerun()


def forget_upload(upload) -> None:
    """Release every copy of an uploaded file's bytes this session holds (st.chat_input drops its files from
    the upload store the same way), and empty the widget by giving it a new key."""
    ctx = get_script_run_ctx()
    remove = getattr(ctx.uploaded_file_mgr, "remove_file", None) if ctx is not None else None
    if remove is not None:  # the in-memory store (Streamlit's default) can remove one file
        remove(session_id=ctx.session_id, file_id=upload.file_id)
    upload.close()  # the widget's value: a BytesIO over the same bytes
    st.session_state.hist_upload_n = st.session_state.get("hist_upload_n", 0) + 1


def close_upload() -> None:
    upload_slot().pop("loaded", None)
    st.session_state.hist_upload_error = ""


UPLOAD_LR_RANGE = (1e-5, 10.0)  # the Learning rate field's range


def draw_loaded(store: Store, loaded: LoadedUpload) -> None:
    weights, digest = loaded.weights, loaded.digest
    origin = weights.run.get("id")
    st.success(f"Loaded {weights.config.describe()}: {weights.parameters:,} parameters, "
               f"{len(weights.epochs)} epoch(s) of history" + (f", from run {md(origin)}." if origin else "."))
    imported = st.session_state.setdefault("hist_imported", {})
    cols = st.columns([1, 1.3, 1, 1.3, 1], vertical_alignment="bottom")
    cols[0].number_input("More epochs", 1, 200, 5, key="hist_up_epochs")
    schedule = weights.run.get("schedule") or [[weights.config.epochs, weights.config.lr]]
    low, high = UPLOAD_LR_RANGE
    cols[1].number_input("Learning rate", low, high, min(high, max(low, float(schedule[-1][1]))), format="%g",
                         key="hist_up_lr")
    continue_clicked = cols[2].button("Continue training", key="hist_up_continue", type="primary",
                                      help="Adds the model to the history and trains it further.")
    add_clicked = cols[3].button("Add to history", key="hist_up_add",
                                 disabled=_exists(store, imported.get(digest)),
                                 help="Record it as a run (history and weights) without training.")
    cols[4].button("Close", key="hist_up_close", on_click=close_upload, help="Forget this file.")
    if add_clicked or continue_clicked:
        run_id = imported.get(digest)
        if not _exists(store, run_id):
            run_id = _import(store, weights, digest)
            if run_id is None:
                return
            imported[digest] = run_id
        close_upload()  # it is a run in the history now: the parsed copy is not needed any more
        if continue_clicked:
            _continue_upload(run_id, weights)
        st.session_state.hist_flash = f"Added the uploaded model to the history as run {md(run_id)}."
        st.rerun()
    evaluation_panel(weights.config, weights.state_dict, f"upload|{digest}", key="upload_eval",
                     recorded_test_acc=weights.run.get("test_acc"), trained_on=weights.run.get("data_source", ""))


def _exists(store: Store, run_id: str | None) -> bool:
    if run_id is None:
        return False
    try:
        store.get_run(run_id)
        return True
    except (KeyError, StoreError):
        return False


def _import(store: Store, weights, digest: str) -> str | None:
    try:
        evaluation = cached_evaluation(f"upload|{digest}", data_dir(), weights.config, weights.state_dict)
        test = (evaluation.loss, evaluation.accuracy)
    except Exception:  # data missing here: the run is still recorded, without a test result
        test = (None, None)
    try:
        return import_weights(store, weights, test_loss=test[0], test_acc=test[1],
                              data_source=weights.run.get("data_source", ""))
    except (StoreError, ValueError) as exc:
        st.error(f"Cannot add it to the history: {md(exc)}")
        return None


def _continue_upload(run_id: str, weights) -> None:
    epochs, lr = int(st.session_state.hist_up_epochs), float(st.session_state.hist_up_lr)
    Phase(epochs, lr)  # validates
    refused = f"Added as run {md(run_id)}, but cannot continue it"
    if not weights.epochs:
        why = "the file carries no epoch history, so it cannot be continued in place; it was added to the history " \
              "for evaluation"
        st.session_state.hist_flash = f"{refused}: {md(why)}"
        st.rerun()
    continue_in_train_page(run_id, epochs, lr, error_key="hist_flash", refused=refused)
