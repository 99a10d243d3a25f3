"""The sidebar: run settings as widgets, turned into a RunConfig (and back, when a run is reopened)."""
from __future__ import annotations

import streamlit as st

from core.config import ACTIVATIONS, DATASETS, OPTIMIZERS, ConfigError, Phase, RunConfig, parse_hidden_sizes
from core.engine.data import TITLES
from core.engine.devices import list_devices

from .text import md

LR_OPTIONS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
OPTIMIZER_LABELS = {"sgd": "SGD", "sgd_momentum": "SGD + momentum 0.9", "adam": "Adam"}
PIPELINE_LABELS = {"resident": "Resident (whole split on the device)",
                   "dataloader": "Tutorial's DataLoader (per-sample ToTensor)"}
DEFAULTS = RunConfig()


def default_device() -> str:
    available = [d.kind for d in list_devices() if d.available]
    return "cuda" if "cuda" in available else "mps" if "mps" in available else "cpu"


HIDDEN_SLIDER = (8, 1024)  # units; wider, uneven or deeper models use the per-layer field
LAYERS_SLIDER = (1, 4)


def fits_sliders(hidden_sizes: tuple[int, ...]) -> bool:
    """Whether the two sliders (one width for every layer) can show these hidden sizes exactly."""
    low, high = HIDDEN_SLIDER
    return (len(set(hidden_sizes)) == 1 and low <= hidden_sizes[0] <= high
            and LAYERS_SLIDER[0] <= len(hidden_sizes) <= LAYERS_SLIDER[1])


def hidden_list_text(hidden_sizes) -> str:
    return ", ".join(str(int(h)) for h in hidden_sizes)


def parse_hidden_list(text: str) -> tuple[int, ...]:
    """'128, 64' -> (128, 64) through config.parse_hidden_sizes; RunConfig checks the ranges."""
    try:
        return parse_hidden_sizes(text)
    except ConfigError as exc:
        raise ConfigError(f"hidden sizes per layer: {str(exc).removeprefix('hidden_sizes: ')}") from None


def widget_values(config: RunConfig) -> dict:
    """Session-state values for every settings widget that show `config`."""
    low, high = HIDDEN_SLIDER
    return {
        "cfg_dataset": config.dataset,
        "cfg_hidden": min(high, max(low, int(config.hidden_sizes[0]))),
        "cfg_layers": min(LAYERS_SLIDER[1], len(config.hidden_sizes)),
        "cfg_per_layer_mode": not fits_sliders(config.hidden_sizes),
        "cfg_hidden_list": hidden_list_text(config.hidden_sizes),
        "cfg_activation": config.activation,
        "cfg_batch": config.batch_size,
        "cfg_lr": config.lr,
        "cfg_epochs": config.epochs,
        "cfg_optimizer": config.optimizer,
        "cfg_device": config.device if config.device != "auto" else default_device(),
        "cfg_seed": config.seed,
        "cfg_pipeline": config.pipeline,
    }


def init_state(config: RunConfig | None = None, force: bool = False, then: tuple[Phase, ...] = ()) -> None:
    """Create the widgets' state only where it is missing (or overwrite it all with force=True).

    `then`: phases Train runs after the sidebar's epochs at its learning rate (a shared schedule).
    """
    for key, value in {**widget_values(config or DEFAULTS), "cfg_then": tuple(then)}.items():
        if force or key not in st.session_state:
            st.session_state[key] = value


def planned_phases(config: RunConfig) -> tuple[Phase, ...]:
    """What Train runs: the sidebar's epochs at its learning rate, then any later phases kept in the state."""
    return (Phase(config.epochs, config.lr), *st.session_state.get("cfg_then", ()))


def describe_phases(phases: tuple[Phase, ...]) -> str:
    """'5 epochs at lr 0.1, 1 epoch at lr 0.05'."""
    return ", ".join(f"{p.epochs} epoch{'s' * (p.epochs != 1)} at lr {p.lr:g}" for p in phases)


def config_from_state() -> RunConfig:
    s = st.session_state
    hidden = parse_hidden_list(s.cfg_hidden_list) if s.get("cfg_per_layer_mode") else \
        (int(s.cfg_hidden),) * int(s.cfg_layers)
    return RunConfig(dataset=s.cfg_dataset, hidden_sizes=hidden,
                     activation=s.cfg_activation, batch_size=int(s.cfg_batch), lr=float(s.cfg_lr),
                     epochs=int(s.cfg_epochs), optimizer=s.cfg_optimizer, device=s.cfg_device,
                     seed=int(s.cfg_seed), pipeline=s.cfg_pipeline)


def settings_sidebar() -> None:
    """Draw the settings widgets; their values live in st.session_state under cfg_* keys."""
    init_state()
    st.sidebar.header("Settings")
    st.sidebar.selectbox("Dataset", DATASETS, key="cfg_dataset", format_func=TITLES.get)
    hidden_layers_picker()
    st.sidebar.selectbox("Activation", ACTIVATIONS, key="cfg_activation")
    st.sidebar.slider("Batch size", 16, 2048, key="cfg_batch")
    lr_options = sorted(set(LR_OPTIONS) | {float(st.session_state.cfg_lr)})
    st.sidebar.select_slider("Learning rate (log scale)", lr_options, key="cfg_lr", format_func=lambda v: f"{v:g}")
    st.sidebar.slider("Epochs", 1, 50, key="cfg_epochs")
    later = st.session_state.get("cfg_then") or ()
    if later:
        st.sidebar.caption(f"Then {describe_phases(later)}: Train runs this whole schedule.")
        st.sidebar.button("Train the first phase only", key="cfg_then_clear", on_click=_drop_later_phases)
    st.sidebar.selectbox("Optimizer", OPTIMIZERS, key="cfg_optimizer", format_func=OPTIMIZER_LABELS.get)
    device_picker()
    st.sidebar.number_input("Seed", 0, 2**31 - 1, key="cfg_seed", step=1)
    st.sidebar.selectbox("Data pipeline", tuple(PIPELINE_LABELS), key="cfg_pipeline", format_func=PIPELINE_LABELS.get)


def hidden_layers_picker() -> None:
    """One width for every layer on two sliders, or each layer's width in a text field (a reopened run or a
    link whose sizes the sliders cannot show keeps them exactly: Train never trains another shape)."""
    if st.session_state.get("cfg_per_layer_mode"):
        st.sidebar.text_input("Hidden sizes per layer", key="cfg_hidden_list",
                              help="Units of each hidden layer, first layer first, separated by commas "
                                   "(1 to 8192 units, up to 16 layers), e.g. 128, 64.")
        st.sidebar.button("Same width for every layer", key="cfg_equal_layers", on_click=_use_sliders,
                          help="Back to the Hidden size and Hidden layers sliders.")
        return
    low, high = HIDDEN_SLIDER
    # A reopened run may have a width that is not on the slider's grid: widen the grid for it.
    st.sidebar.slider("Hidden size (units per layer)", low, high,
                      step=8 if st.session_state.cfg_hidden % 8 == 0 else 1, key="cfg_hidden")
    st.sidebar.slider("Hidden layers", *LAYERS_SLIDER, key="cfg_layers")
    st.sidebar.button("Set each layer's width", key="cfg_per_layer", on_click=_use_per_layer_field,
                      help="Give every hidden layer its own width, e.g. 128, 64.")


def _use_per_layer_field() -> None:
    st.session_state.cfg_hidden_list = hidden_list_text((st.session_state.cfg_hidden,) * st.session_state.cfg_layers)
    st.session_state.cfg_per_layer_mode = True


def _use_sliders() -> None:
    try:
        sizes = parse_hidden_list(st.session_state.cfg_hidden_list)
    except ConfigError:
        sizes = (DEFAULTS.hidden_sizes[0],)
    low, high = HIDDEN_SLIDER
    st.session_state.cfg_hidden = min(high, max(low, sizes[0]))
    st.session_state.cfg_layers = min(LAYERS_SLIDER[1], len(sizes))
    st.session_state.cfg_per_layer_mode = False


def _drop_later_phases() -> None:
    st.session_state.cfg_then = ()


def device_picker() -> None:
    devices = list_devices()
    available = [d for d in devices if d.available]
    labels = {d.kind: d.label for d in devices}
    if st.session_state.cfg_device not in [d.kind for d in available]:
        st.session_state.cfg_device = available[0].kind
    st.sidebar.radio("Device", [d.kind for d in available], key="cfg_device", format_func=labels.get)
    for d in devices:
        if not d.available:
            st.sidebar.caption(f"✗ {d.kind.upper()} unavailable: {md(d.reason)}")


def validated_config() -> tuple[RunConfig | None, str]:
    """(the sidebar's config, '') or (None, why not: plain text that may quote what the user typed)."""
    try:
        return config_from_state(), ""
    except (ConfigError, AttributeError) as exc:
        return None, str(exc)
