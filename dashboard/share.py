"""Share links: a run's settings as URL query parameters, and filling the sidebar from such a link.

Encoding and validation live in core.exchange.share_links (RunConfig checks every value); this module only knows
what the sidebar's widgets can show, and talks to st.query_params and st.session_state.
"""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from core.config import ConfigError, Phase, RunConfig
from core.engine.devices import list_devices
from core.exchange.share_links import SHARE_KEYS, config_to_query, is_share_query, schedule_to_query, share_from_query

from .controls import RANGES, describe_phases, init_state
from .text import md

NOT_IN_SIDEBAR = {"momentum": "momentum", "weight_decay": "weight decay", "val_fraction": "validation share"}


def share_url(config: RunConfig, current_page_path: str = "", schedule: tuple[Phase, ...] = ()) -> str:
    """An absolute link to the Train page with the config (and the run's later phases) in its query
    (relative when the URL is unknown).

    The Train page is the app's default page, which Streamlit serves at the app's root URL.
    """
    if schedule:
        config = config.replace(epochs=schedule[0].epochs, lr=schedule[0].lr)
    query = urlencode({**config_to_query(config), **schedule_to_query(schedule)}, safe=",@")
    url = st.context.url
    if not url:
        return f"/?{query}"
    base = url.removesuffix("/")
    if current_page_path and base.endswith("/" + current_page_path):
        base = base[:-len(current_page_path) - 1]
    return f"{base}/?{query}"


def sidebar_check(config: RunConfig) -> tuple[list[str], list[str]]:
    """(problems that stop the link being applied, notes about settings the sidebar replaces)."""
    problems, notes = [], []
    # Hidden sizes of any shape RunConfig accepts fit: the sidebar's per-layer field shows what its sliders cannot.
    checks = {"batch": config.batch_size, "epochs": config.epochs, "seed": config.seed}
    for name, value in checks.items():
        low, high = RANGES[name]  # the sidebar's widgets: a link asking for more cannot be shown there
        if not low <= value <= high:
            problems.append(f"{name} {value} is outside the sidebar's range {low}–{high}")
    default = RunConfig()
    for name, label in NOT_IN_SIDEBAR.items():
        if getattr(config, name) != getattr(default, name):
            notes.append(f"{label} {getattr(config, name):g} is not a sidebar setting, so the default "
                         f"{getattr(default, name):g} applies")
    devices = {d.kind: d for d in list_devices()}
    if config.device in devices and not devices[config.device].available:
        notes.append(f"device {config.device} is not available here ({devices[config.device].reason}); "
                     f"another device is selected")
    return problems, notes


def apply_share_link() -> None:
    """Fill the sidebar from share-link query parameters once, then drop them from the URL.

    Call before the sidebar's widgets are drawn. Invalid links change nothing and say why.
    """
    params = st.query_params.to_dict()
    if is_share_query(params):
        for key in SHARE_KEYS:
            if key in st.query_params:
                del st.query_params[key]
        st.session_state.share_message = _apply(params)
    message = st.session_state.get("share_message")
    if message:
        kind, text = message
        {"error": st.error, "warning": st.warning, "success": st.success}[kind](text)
        st.button("Dismiss", key="share_dismiss", on_click=_dismiss)


def _apply(params: dict) -> tuple[str, str]:
    """(kind, markdown): the link's values are quoted in it escaped."""
    try:
        config, later = share_from_query(params)
    except ConfigError as exc:
        return "error", f"This share link was not applied: {md(str(exc).removeprefix('invalid share link: '))}."
    problems, notes = sidebar_check(config)
    if problems:
        return "error", f"This share link was not applied: {md('; '.join(problems))}."
    init_state(config, force=True, then=later)
    schedule = f", then {describe_phases(later)}" if later else ""
    text = (f"Settings filled in from a share link: {config.describe()}, {config.epochs} epochs{schedule}. "
            f"Press **Train** to run them.")
    if notes:
        return "warning", text + " Note: " + md("; ".join(notes)) + "."
    return "success", text


def _dismiss() -> None:
    st.session_state.share_message = None
