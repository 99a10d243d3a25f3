"""The Sweep page: many settings tried for you. A search space (each hyperparameter fixed, a range or choices), a
sampler, a pruner and a trial budget go to core.studies.sweep (Optuna); every trial is an ordinary run of the shared
RunManager, so History, Continue and export work on it.

While a sweep runs, and afterwards, the page draws its snapshot: progress, every trial's accuracy curve overlaid,
what each setting costs in seconds per epoch against what it reaches, the settings against accuracy (parallel
coordinates), which settings mattered, and a results table. `?sweep=<id>` in the URL reattaches after a refresh.
"""
from __future__ import annotations


import streamlit as st

from core.config import ACTIVATIONS, DATASETS, OPTIMIZERS, ConfigError, DeviceError, RunConfig, RunStatus, StoreError
from core.engine.data import TITLES
from core.engine.devices import list_devices
from core.studies.sweep import Sweeps
from core.studies.sweep_analysis import MIN_TRIALS_FOR_IMPORTANCE, param_importances
from core.studies.sweep_space import DIMENSIONS, parse_space
from core.studies.sweep_state import EXECUTORS, PRUNERS, SAMPLERS, SweepSnapshot, SweepSpec

from . import pages
from . import sweep_charts as charts
from .lab import live_snapshot, read_snapshot, stored_picker
from .state import get_manager, session_owner
from .status import TROUBLE, status_label
from .stream_chart import stream_chart
from .text import md

MODES = ("default", "fixed", "range", "choices")  # default: not in the space, the run's own default value
CHOICES = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS}  # the named hyperparameters' allowed values
# A useful first sweep on a 2-core CPU in about two minutes (full MNIST): small and mid-size models, the learning
# rates where SGD and Adam both work somewhere, 20 trials of 5 epochs, weak settings pruned after an epoch or two.
DEFAULT_EDITOR = {
    "hidden": ("range", "32", "512", True, ""),
    "layers": ("range", "1", "2", False, ""),
    "lr": ("range", "0.003", "1", True, ""),
    "batch_size": ("range", "64", "512", True, ""),
    "optimizer": ("choices", "", "", False, "sgd|adam"),
    "activation": ("default", "", "", False, "relu"),
    "weight_decay": ("default", "", "", False, "0"),
    "momentum": ("default", "", "", False, "0.9"),
}
DEFAULTS = {"sw_trials": 20, "sw_epochs": 5, "sw_sampler": "tpe", "sw_pruner": "median", "sw_seed": 0,
            "sw_dataset": "mnist", "sw_device": "cpu", "sw_parallel": 1, "sw_executor": "local"}
SAMPLER_LABELS = {"tpe": "TPE (learns from earlier trials)", "random": "Random", "grid": "Grid (ends and middle of "
                  "each range)"}
PRUNER_LABELS = {"median": "Median (stop a trial below the median of earlier ones)",
                 "halving": "Successive halving", "none": "None (every trial runs all its epochs)"}
EXECUTOR_LABELS = {"local": "This machine (the dashboard's workers)", "ray": "Ray Tune (a local Ray, or the cluster "
                   "at RAY_ADDRESS)"}


@st.cache_resource(show_spinner=False)
def get_sweeps() -> Sweeps:
    return Sweeps(get_manager())


def init_state() -> None:
    for name, (mode, low, high, log, value) in DEFAULT_EDITOR.items():
        for field, default in (("mode", mode), ("low", low), ("high", high), ("log", log), ("value", value)):
            if f"sw_{name}_{field}" not in st.session_state:
                st.session_state[f"sw_{name}_{field}"] = default
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value


# -- the space editor ---------------------------------------------------------------------------------------
def dimension_text(name: str) -> str | None:
    """The CLI syntax of one editor row ('lr=0.003..1:log'), None when it is left at the default."""
    s = st.session_state
    mode = s[f"sw_{name}_mode"]
    if mode == "default":
        return None
    if mode == "range":
        return f"{name}={str(s[f'sw_{name}_low']).strip()}..{str(s[f'sw_{name}_high']).strip()}" \
               f"{':log' if s[f'sw_{name}_log'] else ''}"
    value = s[f"sw_{name}_value"]
    if isinstance(value, (list, tuple)):
        value = "|".join(value)
    return f"{name}={str(value).strip()}"


def space_text() -> str:
    return ",".join(text for text in (dimension_text(name) for name in DIMENSIONS) if text)


def space_editor(disabled: bool) -> None:
    st.markdown("**Search space**: per setting, leave it at the run's default, fix it, give a range (log-scaled for "
                "sizes and rates), or list choices.")
    head = st.columns([1.3, 1.1, 1, 1, 0.6, 2.2])
    for col, title in zip(head, ("setting", "how", "from", "to", "log", "value / choices")):
        col.caption(title)
    for name in DIMENSIONS:
        kind = DIMENSIONS[name][0]
        modes = [m for m in MODES if not (m == "range" and kind is str)]
        cols = st.columns([1.3, 1.1, 1, 1, 0.6, 2.2], vertical_alignment="center")
        cols[0].markdown(f"`{name}`")
        mode = cols[1].selectbox(name, modes, key=f"sw_{name}_mode", label_visibility="collapsed", disabled=disabled)
        ranged = mode == "range"
        cols[2].text_input(f"{name} from", key=f"sw_{name}_low", label_visibility="collapsed",
                           disabled=disabled or not ranged)
        cols[3].text_input(f"{name} to", key=f"sw_{name}_high", label_visibility="collapsed",
                           disabled=disabled or not ranged)
        cols[4].checkbox(f"{name} log", key=f"sw_{name}_log", label_visibility="collapsed",
                         disabled=disabled or not ranged)
        if name in CHOICES and mode == "choices":
            value = st.session_state.get(f"sw_{name}_value")
            if not isinstance(value, list):
                st.session_state[f"sw_{name}_value"] = [v for v in str(value).split("|") if v in CHOICES[name]]
            cols[5].multiselect(f"{name} choices", CHOICES[name], key=f"sw_{name}_value",
                                label_visibility="collapsed", disabled=disabled)
        elif name in CHOICES and mode == "fixed":
            value = st.session_state.get(f"sw_{name}_value")
            first = value[0] if isinstance(value, list) and value else str(value).split("|")[0]
            st.session_state[f"sw_{name}_value"] = first if first in CHOICES[name] else CHOICES[name][0]
            cols[5].selectbox(f"{name} value", CHOICES[name], key=f"sw_{name}_value", label_visibility="collapsed",
                              disabled=disabled)
        else:
            value = st.session_state.get(f"sw_{name}_value")
            if isinstance(value, list):
                st.session_state[f"sw_{name}_value"] = "|".join(value)
            hint = "e.g. 64|128|256" if mode == "choices" else "the value" if mode == "fixed" else ""
            cols[5].text_input(f"{name} value", key=f"sw_{name}_value", label_visibility="collapsed",
                               placeholder=hint, disabled=disabled or mode in ("default", "range"))


def settings(disabled: bool) -> None:
    s = st.session_state
    cols = st.columns(4)
    cols[0].number_input("Trials", 1, 500, key="sw_trials", disabled=disabled,
                         help="Trials that count: a trial stopped or cut off is tried again on Resume.")
    cols[1].number_input("Epochs per trial", 1, 50, key="sw_epochs", disabled=disabled)
    cols[2].selectbox("Sampler", SAMPLERS, key="sw_sampler", format_func=SAMPLER_LABELS.get, disabled=disabled)
    cols[3].selectbox("Pruner", PRUNERS, key="sw_pruner", format_func=PRUNER_LABELS.get, disabled=disabled)
    devices = [d for d in list_devices() if d.available]
    if s.sw_device not in [d.kind for d in devices]:
        s.sw_device = "cpu"
    labels = {d.kind: d.label for d in devices}
    cols = st.columns(4)
    cols[0].selectbox("Dataset", DATASETS, key="sw_dataset", format_func=TITLES.get, disabled=disabled)
    cols[1].selectbox("Device", list(labels), key="sw_device", format_func=labels.get, disabled=disabled)
    at_once = get_manager().runs_at_once("cuda" if s.sw_device == "cuda" else "mps")
    s.sw_parallel = min(int(s.sw_parallel), at_once)
    cols[2].number_input("Trials at once", 1, max(at_once, 1), key="sw_parallel",
                         disabled=disabled or s.sw_device == "cpu" or at_once == 1,
                         help=f"On a GPU, several small trials can train side by side: this server trains up to "
                              f"{at_once} run{'s' * (at_once != 1)} at once on a GPU (start it with GPU_RUNS_AT_ONCE=4 "
                              f"for more). CPU trials run one at a time: they share the cores.")
    cols[3].number_input("Sampler seed", 0, 2**31 - 1, key="sw_seed", disabled=disabled,
                         help="The same seed gives a random or grid sweep the same trials in the same order.")
    st.radio("Executor", EXECUTORS, key="sw_executor", format_func=lambda e: EXECUTOR_LABELS.get(e, e),
             horizontal=True, disabled=disabled)


def spec_from_state() -> SweepSpec:
    """The sweep the editor describes; ConfigError with the reason when it does not validate."""
    s = st.session_state
    base = RunConfig(dataset=s.sw_dataset, device=s.sw_device)
    parallel = int(s.sw_parallel) if s.sw_device != "cpu" else 1
    return SweepSpec(parse_space(space_text()), trials=int(s.sw_trials), epochs=int(s.sw_epochs),
                     sampler=s.sw_sampler, pruner=s.sw_pruner, seed=int(s.sw_seed), base=base, parallel=parallel,
                     executor=s.sw_executor)


def cli_line(spec: SweepSpec) -> str:
    return (f'python -m core sweep --space "{spec.space.text()}" --trials {spec.trials} --epochs {spec.epochs} '
            f"--sampler {spec.sampler} --pruner {spec.pruner} --seed {spec.seed} --dataset {spec.base.dataset} "
            f"--device {spec.base.device}" + (f" --parallel {spec.parallel}" if spec.parallel > 1 else "")
            + (f" --executor {spec.executor}" if spec.executor != "local" else ""))


# -- commands -----------------------------------------------------------------------------------------------
def start_sweep() -> None:
    st.session_state.sw_error = ""
    try:
        sweep_id = get_sweeps().start(spec_from_state(), owner=session_owner())
    except (ConfigError, DeviceError, StoreError, RuntimeError) as exc:
        st.session_state.sw_error = f"The sweep did not start: {exc}"
        return
    st.query_params["sweep"] = sweep_id


def stop_sweep(sweep_id: str) -> None:
    get_sweeps().stop(sweep_id)


def resume_sweep(sweep_id: str) -> None:
    st.session_state.sw_error = ""
    try:
        get_sweeps().resume(sweep_id, owner=session_owner())
    except (ConfigError, DeviceError, KeyError, StoreError, RuntimeError) as exc:
        st.session_state.sw_error = f"The sweep cannot be resumed: {exc}"


# -- the page -----------------------------------------------------------------------------------------------
def sweep_page() -> None:
    init_state()
    st.title("Sweep: many settings, tried for you")
    try:
        sweeps = get_sweeps()
    except StoreError as exc:
        st.error(f"Sweeps need the run database: {md(str(exc))}")
        return
    sweep_id = st.query_params.get("sweep")
    snap, problem = read_snapshot(lambda: sweeps.snapshot(sweep_id)) if sweep_id else (None, "")
    busy = bool(sweeps.active())
    st.markdown("Optuna proposes settings from the space below; each **trial** is an ordinary run (it appears on "
                "History and can be continued on Train). Weak trials are **pruned**: stopped after an epoch or two "
                "when they trail the trials before them. Beside accuracy, the page shows what each setting costs in "
                "seconds per epoch.")
    with st.expander("New sweep", expanded=snap is None):
        space_editor(busy)
        settings(busy)
        try:
            spec = spec_from_state()
            st.caption(f"The same from a terminal: `{cli_line(spec)}`")
        except ConfigError as exc:
            spec = None
            st.error(md(str(exc)))
        st.button("Start sweep", type="primary", key="sw_start", on_click=start_sweep, disabled=busy or spec is None,
                  help="Another sweep running on this server must end first." if busy else None)
    # Slots for what comes and goes above the live part: an element appearing above it would move it, and the
    # browser would build its streamed charts anew.
    error, picker, controls = st.empty(), st.empty(), st.container(key="sweep_controls")
    if st.session_state.get("sw_error"):
        error.error(md(st.session_state.sw_error))
    recent = [{"id": r["sweep_id"], "created_at": r["created_at"],
               "title": f"{r['sweep_id']} · {status_label(r['status'])} · {r['trials']} trials · {r['space']}"}
              for r in sweeps.recent()]
    if recent:
        with picker.container():
            stored_picker(recent, "Earlier sweeps", "Sweep", "sweep")
    if problem:
        st.error(f"Sweep {md(sweep_id)} cannot be opened: {md(problem)}")
        return
    if sweep_id and snap is None:
        st.error(f"No sweep {md(sweep_id)} in this server or its study file.")
        return
    if snap is None:
        return
    with controls:
        sweep_controls(snap)
    live_snapshot(lambda: sweeps.snapshot(sweep_id), draw_sweep, snap.active,
                  "This sweep is no longer available.", key="sweep_poll")


def sweep_controls(snap: SweepSnapshot) -> None:
    cols = st.columns([1, 1, 2, 4], vertical_alignment="center")
    if snap.active:
        cols[0].button("Stop", key="sw_stop", on_click=stop_sweep, args=(snap.sweep_id,),
                       help="The running trial stops within a batch (recorded stopped, tried again on Resume); no "
                            "new trial starts.")
    elif len([t for t in snap.trials if t.counts]) < snap.spec.budget:
        cols[0].button("Resume", key="sw_resume", on_click=resume_sweep, args=(snap.sweep_id,), type="primary",
                       help="Run the trials left; those stopped or cut off are tried again first.")
    best = snap.best
    if best is not None and best.run_id and cols[2].button(f"Open the best trial ({best.number}) in Train",
                                                            key="sw_open_best"):
        pages.switch_to(pages.TRAIN, run=best.run_id)


def draw_sweep(snap: SweepSnapshot) -> None:
    with st.container(key="sweep_status"):
        draw_status(snap)
    with st.container(key="sweep_charts"):
        left, right = st.columns(2)
        with left:
            stream_chart(charts.trial_curves_figure(snap), key="sweep_curves", series=snap.sweep_id,
                         config=charts.CONFIG)
        with right:
            stream_chart(charts.cost_figure(snap), key="sweep_cost", series=snap.sweep_id, config=charts.CONFIG)
    with st.container(key="sweep_analysis"):
        left, right = st.columns([3, 2])
        with left:
            if sum(t.value is not None for t in snap.trials) >= 2:
                stream_chart(charts.parallel_coordinates_figure(snap), key="sweep_parallel", series=snap.sweep_id,
                             config=charts.CONFIG)
            else:
                st.caption("The settings-against-accuracy view appears once two trials have a result.")
        with right:
            draw_importance(snap)
    with st.container(key="sweep_table"):
        draw_results(snap)


def draw_status(snap: SweepSnapshot) -> None:
    counts = snap.counts()
    ended = sum(n for status, n in counts.items() if status not in (RunStatus.QUEUED, RunStatus.LOADING,
                                                                      RunStatus.RUNNING))
    parts = [f"{n} {status}" for status, n in sorted(counts.items())]
    eta = snap.eta_s()
    eta_text = f" · about {eta:.0f} s left" if snap.active and eta is not None else ""
    best = snap.best
    best_text = f" · best so far: trial {best.number}, {best.value:.2%}" if best is not None else ""
    st.markdown(f"**{status_label(snap.status)}** · sweep {md(snap.sweep_id)} · {snap.spec.sampler} sampler, "
                f"{snap.spec.pruner} pruner · {ended} of {snap.planned} trials done"
                f"{' (' + ', '.join(parts) + ')' if parts else ''}{eta_text}{best_text}")
    if snap.message:
        (st.warning if snap.status in TROUBLE else st.caption)(md(snap.message))
    if snap.active:
        st.progress(min(1.0, ended / max(1, snap.planned)), text=f"{ended} / {snap.planned} trials")
    if best is not None:
        st.caption(f"Best: {md(charts.params_text(best.params))} · best epoch {best.best_epoch} · "
                   f"{best.seconds_per_epoch or 0:.3f} s per epoch · run {md(best.run_id)}")


def draw_importance(snap: SweepSnapshot) -> None:
    complete = sum(t.status in (RunStatus.FINISHED, RunStatus.DIVERGED) for t in snap.trials)
    if complete < MIN_TRIALS_FOR_IMPORTANCE:
        st.caption(f"Which settings mattered appears once {MIN_TRIALS_FOR_IMPORTANCE} trials have run all their "
                   f"epochs ({complete} so far).")
        return
    key = (snap.sweep_id, complete)
    kept = st.session_state.get("_sweep_importance")
    if kept is None or kept[0] != key:  # recomputed only when another trial has ended (Optuna reads the study)
        kept = (key, param_importances(get_sweeps().storage(), snap.sweep_id))
        st.session_state._sweep_importance = kept
    if not kept[1]:
        st.caption("Optuna's importance evaluator cannot tell the settings apart yet.")
        return
    st.plotly_chart(charts.importance_figure(kept[1]), config=charts.CONFIG, key="sweep_importance_chart")


def draw_results(snap: SweepSnapshot) -> None:
    frame = charts.results_frame(snap)  # once per poll: the table, the picker's order and the CSV
    if frame.empty:
        st.caption("The results table fills as trials end.")
        return
    csv = frame.to_csv(index=False)
    with_runs = {t.number: t for t in snap.trials if t.run_id}
    order = [n for n in frame["trial"] if n in with_runs]  # best first, as the table
    frame["run"] = [f"train?run={run_id}" if run_id else None for run_id in frame["run"]]
    st.dataframe(frame, hide_index=True, column_config={
        "run": st.column_config.LinkColumn("run", display_text=r"train\?run=(.*)",
                                           help="Open the trial's run on the Train page (its curves, Continue)"),
    })
    cols = st.columns([3, 1.2, 1.6], vertical_alignment="bottom")
    chosen = cols[0].selectbox("Trial", order, key="sw_pick", format_func=lambda n: trial_label(with_runs[n]))
    if cols[1].button("Open in Train", key="sw_open_trial", disabled=chosen is None,
                      help="Its curves, its model, Continue and export, on the Train page"):
        pages.switch_to(pages.TRAIN, run=with_runs[chosen].run_id)
    cols[2].download_button("Download results (CSV)", csv, file_name=f"sweep-{snap.sweep_id}.csv",
                            mime="text/csv", key="sw_csv")


def trial_label(trial) -> str:
    value = f"{trial.value:.2%}" if trial.value is not None else "no epoch yet"
    return f"trial {trial.number} · {value} · {trial.status} · {charts.params_text(trial.params)}"
