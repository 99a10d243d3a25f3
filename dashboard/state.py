"""Glue between Streamlit and the engine's RunManager: one manager per server process."""
from __future__ import annotations

import os
import uuid

import streamlit as st

from core.manager import RunManager


@st.cache_resource(show_spinner=False)
def get_manager() -> RunManager:
    # Shared by every session and rerun; shuts its workers down at interpreter exit (atexit).
    return RunManager(db_path=os.environ.get("RUNS_DB"), data_dir=os.environ.get("DATA_DIR"), preload="mnist")


def session_owner() -> str:
    """A token for this browser tab, so runs know which session started them."""
    if "owner" not in st.session_state:
        st.session_state.owner = uuid.uuid4().hex[:8]
    return st.session_state.owner


def current_run_id() -> str | None:
    return st.query_params.get("run")


def set_current_run(run_id: str | None) -> None:
    if run_id:
        st.query_params["run"] = run_id
    elif "run" in st.query_params:
        del st.query_params["run"]
