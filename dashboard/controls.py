"""The settings sidebar, one for Train and Compare: run settings as widgets, turned into a RunConfig (and back, when
a run is reopened or a share link opened). Its widgets' ranges, choices and defaults are defined here only.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.config import (ACTIVATIONS, DATASETS, MAX_HIDDEN_LAYERS, MAX_HIDDEN_SIZE, OPTIMIZERS, PIPELINES, ConfigError,
                         Phase, RunConfig, parse_hidden_sizes)
from core.engine.data import TITLES
from core.engine.devices import list_devices

from .text import md

DEFAULTS = RunConfig()  # every widget starts at the tutorial's settings
# The sliders' and number fields' ranges (all inside RunConfig's limits). A model wider than the hidden-size slider,
# uneven or deeper than the layers slider is set in the per-layer field (up to core.config's MAX_HIDDEN_SIZE units and
# MAX_HIDDEN_LAYERS layers); share.py refuses a link whose batch, epochs or seed these ranges cannot show.
RANGES = {"hidden": (8, 1024), "layers": (1, 4), "batch": (16, 2048), "epochs": (1, 50), "seed": (0, 2**31 - 1)}
LR_OPTIONS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
OPTIMIZER_LABELS = {"sgd": "SGD", "sgd_momentum": "SGD + momentum 0.9", "adam": "Adam"}
PIPELINE_LABELS = {"resident": "Resident (whole split on the device)",
                   "dataloader": "Tutorial's DataLoader (per-sample ToTensor, per-batch copy)"}


@dataclass(frozen=True)
class Sidebar:
    """One page's settings sidebar: where its widgets keep their values, and which of them it shows."""

    prefix: str  # the widgets' session-state keys are f"{prefix}_{name}": cfg_batch, cmp_batch, ...
    header: str
    caption: str = ""
    # Device, data pipeline, per-layer widths and later phases: Train's. Compare's legs choose device and pipeline.
    whole_run: bool = True

    def key(self, name: str) -> str:
        return f"{self.prefix}_{name}"


TRAIN = Sidebar("cfg", "Settings")
COMPARE = Sidebar("cmp", "Experiment", "The same on every leg: only device, threads and pipeline differ.",
                  whole_run=False)


def lr_choices(*current: float) -> list[float]:
    """The learning-rate slider's stops: LR_OPTIONS plus the value(s) it must show (a reopened run's own rate)."""
    return sorted(set(LR_OPTIONS) | {float(v) for v in current})


def default_device() -> str:
    available = [d.kind for d in list_devices() if d.available]
    return "cuda" if "cuda" in available else "mps" if "mps" in available else "cpu"


def fits_sliders(hidden_sizes: tuple[int, ...]) -> bool:
    """Whether the two sliders (one width for every layer) can show these hidden sizes exactly."""
    low, high = RANGES["hidden"]
    return (len(set(hidden_sizes)) == 1 and low <= hidden_sizes[0] <= high
            and RANGES["layers"][0] <= len(hidden_sizes) <= RANGES["layers"][1])


def hidden_list_text(hidden_sizes) -> str:
    return ", ".join(str(int(h)) for h in hidden_sizes)


def parse_hidden_list(text: str) -> tuple[int, ...]:
    """'128, 64' -> (128, 64) through config.parse_hidden_sizes; RunConfig checks the ranges."""
    try:
        return parse_hidden_sizes(text)
    except ConfigError as exc:
        raise ConfigError(f"hidden sizes per layer: {str(exc).removeprefix('hidden_sizes: ')}") from None


def widget_values(config: RunConfig, sidebar: Sidebar = TRAIN) -> dict:
    """Session-state values for every settings widget of `sidebar` that show `config`."""
    low, high = RANGES["hidden"]
    values = {
        "dataset": config.dataset,
        "hidden": min(high, max(low, int(config.hidden_sizes[0]))),
        "layers": min(RANGES["layers"][1], len(config.hidden_sizes)),
        "activation": config.activation,
        "batch": config.batch_size,
        "lr": config.lr,
        "epochs": config.epochs,
        "optimizer": config.optimizer,
        "seed": config.seed,
    }
    if sidebar.whole_run:
        values.update({
            "per_layer_mode": not fits_sliders(config.hidden_sizes),
            "hidden_list": hidden_list_text(config.hidden_sizes),
            "device": config.device if config.device != "auto" else default_device(),
            "pipeline": config.pipeline,
        })
    return {sidebar.key(name): value for name, value in values.items()}


def init_state(config: RunConfig | None = None, force: bool = False, then: tuple[Phase, ...] = (),
               sidebar: Sidebar = TRAIN) -> None:
    """Create the widgets' state only where it is missing (or overwrite it all with force=True).

    `then`: phases Train runs after the sidebar's epochs at its learning rate (a shared schedule).
    """
    values = widget_values(config or DEFAULTS, sidebar)
    if sidebar.whole_run:
        values[sidebar.key("then")] = tuple(then)
    for key, value in values.items():
        if force or key not in st.session_state:
            st.session_state[key] = value


def planned_phases(config: RunConfig) -> tuple[Phase, ...]:
    """What Train runs: the sidebar's epochs at its learning rate, then any later phases kept in the state."""
    return (Phase(config.epochs, config.lr), *st.session_state.get(TRAIN.key("then"), ()))


def describe_phases(phases: tuple[Phase, ...]) -> str:
    """'5 epochs at lr 0.1, 1 epoch at lr 0.05'."""
    return ", ".join(f"{p.epochs} epoch{'s' * (p.epochs != 1)} at lr {p.lr:g}" for p in phases)


def config_from_state(sidebar: Sidebar = TRAIN) -> RunConfig:
    """The sidebar's settings; on Compare's, the device and pipeline are the defaults (each leg sets its own)."""
    s, k = st.session_state, sidebar.key
    hidden = parse_hidden_list(s[k("hidden_list")]) if sidebar.whole_run and s.get(k("per_layer_mode")) else \
        (int(s[k("hidden")]),) * int(s[k("layers")])
    config = RunConfig(dataset=s[k("dataset")], hidden_sizes=hidden, activation=s[k("activation")],
                       batch_size=int(s[k("batch")]), lr=float(s[k("lr")]), epochs=int(s[k("epochs")]),
                       optimizer=s[k("optimizer")], seed=int(s[k("seed")]))
    # (Compare's cmp_pipeline is its pipeline switch, not a pipeline: only Train's sidebar has these two)
    return config.replace(device=s[k("device")], pipeline=s[k("pipeline")]) if sidebar.whole_run else config


def bounds(name: str, sidebar: Sidebar = TRAIN) -> tuple[int, int]:
    """RANGES[name], widened to hold the widget's value: a reopened run (the CLI takes 100 epochs, batch 8, any
    seed RunConfig allows) shows its own setting, and Train retrains it, never a value clamped into the range."""
    low, high = RANGES[name]
    value = st.session_state.get(sidebar.key(name))
    return (low, high) if value is None else (min(low, int(value)), max(high, int(value)))


def settings_sidebar(sidebar: Sidebar = TRAIN) -> None:
    """Draw the settings widgets; their values live in st.session_state under the sidebar's keys (cfg_* for
    Train, cmp_* for Compare). A page adds its own widgets below them."""
    init_state(sidebar=sidebar)
    sb, k = st.sidebar, sidebar.key
    sb.header(sidebar.header)
    if sidebar.caption:
        sb.caption(sidebar.caption)
    sb.selectbox("Dataset", DATASETS, key=k("dataset"), format_func=TITLES.get)
    hidden_layers_picker(sidebar)
    sb.selectbox("Activation", ACTIVATIONS, key=k("activation"))
    sb.slider("Batch size", *bounds("batch", sidebar), key=k("batch"))
    sb.select_slider("Learning rate (log scale)", lr_choices(st.session_state[k("lr")]), key=k("lr"),
                     format_func=lambda v: f"{v:g}")
    sb.slider("Epochs", *bounds("epochs", sidebar), key=k("epochs"))
    later = st.session_state.get(k("then")) or ()
    if sidebar.whole_run and later:
        sb.caption(f"Then {describe_phases(later)}: Train runs this whole schedule.")
        sb.button("Train the first phase only", key=k("then_clear"), on_click=_drop_later_phases, args=(sidebar,))
    sb.selectbox("Optimizer", OPTIMIZERS, key=k("optimizer"), format_func=OPTIMIZER_LABELS.get)
    if sidebar.whole_run:
        device_picker(sidebar)
    sb.number_input("Seed", *bounds("seed", sidebar), key=k("seed"), step=1)
    if sidebar.whole_run:
        sb.selectbox("Data pipeline", PIPELINES, key=k("pipeline"), format_func=PIPELINE_LABELS.get)


def hidden_layers_picker(sidebar: Sidebar = TRAIN) -> None:
    """One width for every layer on two sliders, or (Train) each layer's width in a text field (a reopened run or a
    link whose sizes the sliders cannot show keeps them exactly: Train never trains another shape)."""
    k = sidebar.key
    if sidebar.whole_run and st.session_state.get(k("per_layer_mode")):
        st.sidebar.text_input("Hidden sizes per layer", key=k("hidden_list"),
                              help=f"Units of each hidden layer, first layer first, separated by commas "
                                   f"(1 to {MAX_HIDDEN_SIZE} units, up to {MAX_HIDDEN_LAYERS} layers), e.g. 128, 64.")
        st.sidebar.button("Same width for every layer", key=k("equal_layers"), on_click=_use_sliders, args=(sidebar,),
                          help="Back to the Hidden size and Hidden layers sliders.")
        return
    # A reopened run may have a width that is not on the slider's grid: widen the grid for it.
    st.sidebar.slider("Hidden size (units per layer)", *RANGES["hidden"],
                      step=8 if st.session_state[k("hidden")] % 8 == 0 else 1, key=k("hidden"))
    st.sidebar.slider("Hidden layers", *RANGES["layers"], key=k("layers"))
    if sidebar.whole_run:
        st.sidebar.button("Set each layer's width", key=k("per_layer"), on_click=_use_per_layer_field,
                          args=(sidebar,), help="Give every hidden layer its own width, e.g. 128, 64.")


def _use_per_layer_field(sidebar: Sidebar) -> None:
    s, k = st.session_state, sidebar.key
    s[k("hidden_list")] = hidden_list_text((s[k("hidden")],) * s[k("layers")])
    s[k("per_layer_mode")] = True


def _use_sliders(sidebar: Sidebar) -> None:
    s, k = st.session_state, sidebar.key
    try:
        sizes = parse_hidden_list(s[k("hidden_list")])
    except ConfigError:
        sizes = (DEFAULTS.hidden_sizes[0],)
    low, high = RANGES["hidden"]
    s[k("hidden")] = min(high, max(low, sizes[0]))
    s[k("layers")] = min(RANGES["layers"][1], len(sizes))
    s[k("per_layer_mode")] = False


def _drop_later_phases(sidebar: Sidebar) -> None:
    st.session_state[sidebar.key("then")] = ()


def device_picker(sidebar: Sidebar = TRAIN) -> None:
    devices = list_devices()
    available = [d for d in devices if d.available]
    labels = {d.kind: d.label for d in devices}
    key = sidebar.key("device")
    if st.session_state[key] not in [d.kind for d in available]:
        st.session_state[key] = available[0].kind
    st.sidebar.radio("Device", [d.kind for d in available], key=key, format_func=labels.get)
    for d in devices:
        if not d.available:
            st.sidebar.caption(f"✗ {d.kind.upper()} unavailable: {md(d.reason)}")


def validated_config(sidebar: Sidebar = TRAIN) -> tuple[RunConfig | None, str]:
    """(the sidebar's config, '') or (None, why not: plain text that may quote what the user typed)."""
    try:
        return config_from_state(sidebar), ""
    except (ConfigError, AttributeError, KeyError) as exc:
        return None, str(exc)
