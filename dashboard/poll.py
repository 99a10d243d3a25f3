"""Live parts of a page that poll the server only while they are on screen, and never faster than it answers.

Streamlit's `st.fragment(run_every=...)` is a browser `setInterval`: it asks for a rerun every interval
whether or not the last one has been drawn, and in a hidden tab too. `live_fragment` instead ends each
fragment run with an invisible timer element (a components-v2 component) that asks for the next run
`every` seconds after this one was drawn (a busy server gets fewer requests, never a backlog), waits
while the tab is hidden (Page Visibility), and asks at once when the tab is shown again.
"""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

# Arms one timeout per drawn fragment run; `seq` changes every run, so the function is called every run.
_TIMER_JS = """
export default function ({ data, setTriggerValue, parentElement }) {
  const host = parentElement;
  clearTimeout(host.__pollTimer);
  if (host.__onVisibility) document.removeEventListener("visibilitychange", host.__onVisibility);
  host.__onVisibility = null;
  if (!data || !data.every) return;
  const tick = () => setTriggerValue("tick", data.seq);
  host.__onVisibility = () => {  // hidden: no timer; shown again: one request at once
    clearTimeout(host.__pollTimer);
    if (document.visibilityState === "visible") tick();
  };
  document.addEventListener("visibilitychange", host.__onVisibility);
  if (document.visibilityState === "visible") host.__pollTimer = setTimeout(tick, data.every * 1000);
  return () => {
    clearTimeout(host.__pollTimer);
    document.removeEventListener("visibilitychange", host.__onVisibility);
  };
}
"""
_timer = st.components.v2.component("live_poll_timer", js=_TIMER_JS)


def _ignore() -> None:
    """The tick's only job is the fragment rerun it causes."""


def poll_after(every_s: float | None, key: str) -> None:
    """Inside a fragment: rerun it `every_s` seconds after this run is drawn, while the tab is visible."""
    seq_key = f"_poll_seq_{key}"
    st.session_state[seq_key] = st.session_state.get(seq_key, 0) + 1
    _timer(key=key, data={"every": every_s, "seq": st.session_state[seq_key]}, on_tick_change=_ignore, height=0)


def live_fragment(body: Callable[[], float | None], key: str) -> None:
    """Run `body` in a fragment; it returns the seconds until its next run (None: no more runs)."""

    def run() -> None:
        poll_after(body(), key)

    st.fragment(run)()
