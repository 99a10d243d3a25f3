"""Glue between Streamlit and the engine's RunManager: one manager per server process."""
from __future__ import annotations

import os
import uuid

import streamlit as st

from core.runs.manager import RunManager


@st.cache_resource(show_spinner=False)
def get_manager() -> RunManager:
    # Shared by every session and rerun; shuts its workers down at interpreter exit (atexit). One run at a time per
    # device keeps timings honest; GPU_RUNS_AT_ONCE lets a sweep train several small trials side by side on a GPU.
    return RunManager(db_path=os.environ.get("RUNS_DB"), data_dir=os.environ.get("DATA_DIR"), preload="mnist",
                      max_gpu_runs=gpu_runs_at_once())


def gpu_runs_at_once() -> int:
    """GPU_RUNS_AT_ONCE (1 to 16; 1 when unset or not a number in that range)."""
    try:
        value = int(os.environ.get("GPU_RUNS_AT_ONCE", "1"))
    except ValueError:
        return 1
    return value if 1 <= value <= 16 else 1


# The tab's own id in sessionStorage: it survives a reload of the tab (a new Streamlit session), and another tab
# gets another. Not crypto.randomUUID: that needs a secure context, which plain http on a network address is not.
_TAB_ID_JS = """
export default function ({ setStateValue }) {
  let id;
  try {
    id = sessionStorage.getItem("mlp-lab-tab");
    if (!id) {
      id = Math.random().toString(36).slice(2, 10) + Math.random().toString(36).slice(2, 10);
      sessionStorage.setItem("mlp-lab-tab", id);
    }
  } catch (e) {
    return;  // storage blocked: the session's own token stands in
  }
  setStateValue("tab", id);
}
"""
_tab_id = st.components.v2.component("tab_identity", js=_TAB_ID_JS)


def _ignore() -> None:
    """Reporting the tab id reruns the page once; nothing else to do."""


def identify_tab() -> None:
    """Once per script run, after the page: learn which browser tab this session is (its id arrives with a rerun,
    the first time). Until it is known (and in AppTest, where no JavaScript runs) the session's own token stands in."""
    _tab_id(key="tab_identity", height=0, on_tab_change=_ignore)


def session_owner() -> str:
    """A token for this browser tab, so runs know which tab started them (a reloaded tab is the same tab)."""
    reported = st.session_state.get("tab_identity")  # the component's state, there from the rerun it caused
    tab = reported.get("tab") if hasattr(reported, "get") else getattr(reported, "tab", None)
    if tab:
        return str(tab)[:32]
    if "owner" not in st.session_state:
        st.session_state.owner = uuid.uuid4().hex[:8]
    return st.session_state.owner


def owns(owner: str) -> bool:
    """Whether a run (or sweep) whose owner is `owner` was started in this browser tab: under its tab id, or under
    the session's own token when it started before the tab's id had arrived (a click right after the page loaded)."""
    return bool(owner) and owner in (session_owner(), st.session_state.get("owner"))


def current_run_id() -> str | None:
    return st.query_params.get("run")


def set_current_run(run_id: str | None) -> None:
    if run_id:
        st.query_params["run"] = run_id
    elif "run" in st.query_params:
        del st.query_params["run"]
