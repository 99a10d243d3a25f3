"""The server's comparisons and speedup maps (one Lab per server), and what the Compare page's two tabs share:
reading a stored snapshot, reopening one, and polling a live one.
"""
from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import streamlit as st

from core.config import ConfigError
from core.studies.comparisons import Comparisons
from core.studies.map_jobs import MapJobs

from .poll import live_fragment
from .state import get_manager
from .text import md

POLL_SECONDS = 1.0


class Lab(NamedTuple):
    comparisons: Comparisons
    maps: MapJobs

    def busy(self) -> bool:
        """A comparison or a map is measuring: neither starts another meanwhile, so the timings stay clean."""
        return bool(self.comparisons.active()) or bool(self.maps.active())


@st.cache_resource(show_spinner=False)
def get_lab() -> Lab:
    manager = get_manager()
    return Lab(Comparisons(manager), MapJobs(manager))


def read_snapshot(get_snapshot):
    """(snapshot or None, '' or why it cannot be shown). A stored comparison or map is read back from the run
    database: a report or run row that no longer validates (an older version's, or edited) is a message here,
    not a traceback."""
    try:
        return get_snapshot(), ""
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        return None, str(exc) or type(exc).__name__


def stored_picker(recent: list[dict], title: str, label: str, key: str) -> None:
    """An expander to reopen a stored comparison or map (newest first): Open puts the picked id in the URL as
    `?{key}=`, where the tab finds what it shows (and a refresh finds it again)."""
    if not recent:
        return
    with st.expander(title, expanded=False):
        titles = {r["id"]: f"{pd.Timestamp(r['created_at'], unit='s'):%Y-%m-%d %H:%M} · {r['title']}" for r in recent}
        cols = st.columns([6, 1], vertical_alignment="bottom")
        cols[0].selectbox(label, list(titles), key=f"{key}_recent", format_func=titles.get)
        cols[1].button("Open", key=f"{key}_open", on_click=_open, args=(key,))


def _open(key: str) -> None:
    choice = st.session_state.get(f"{key}_recent")
    if choice:
        st.query_params[key] = choice


def live_snapshot(get_snapshot, draw, was_active: bool, gone: str, key: str) -> None:
    """Draw a snapshot, polling while it is active (and the tab visible); rerun the page when its activity
    changes (buttons)."""
    def body() -> float | None:
        snap, problem = read_snapshot(get_snapshot)
        if problem:
            st.error(f"It cannot be shown any more: {md(problem)}")
            return None
        if snap is None:
            st.warning(gone)
            return None
        draw(snap)
        if snap.active != was_active:
            st.rerun()
        return POLL_SECONDS if snap.active else None

    live_fragment(body, key=key)
