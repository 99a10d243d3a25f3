"""Figures kept between a page's polls: rebuilt only when what they show changes, and, while something is being
trained or timed, at most every few seconds.

Building a figure and drawing it costs the server and the browser ~0.2-0.3 of a core per redraw, CPU that a training
run or a timed leg on the same machine feels; an unchanged figure costs almost nothing to send again.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

T = TypeVar("T")


def cached_figures(slot: str, identity, progress, build: Callable[[], T], hold_s: float = 0.0) -> T:
    """What build() made, kept in st.session_state[slot]: rebuilt at once for another `identity` (another run, plan
    or map), and for new `progress` (more epochs, cells) once the kept figures are `hold_s` seconds old."""
    kept = st.session_state.get(slot)
    now = time.monotonic()
    if kept is None or kept["identity"] != identity or (kept["progress"] != progress and now - kept["at"] >= hold_s):
        kept = {"identity": identity, "progress": progress, "at": now, "figures": build()}
        st.session_state[slot] = kept
    return kept["figures"]
