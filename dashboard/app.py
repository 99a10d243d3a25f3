"""Entry point: `streamlit run dashboard/app.py`."""
from __future__ import annotations

import sys
from pathlib import Path

# Streamlit puts dashboard/ on sys.path; the engine package lives beside it.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import pages  # noqa: E402
from dashboard.compare_page import compare_page  # noqa: E402
from dashboard.history_page import history_page  # noqa: E402
from dashboard.state import identify_tab  # noqa: E402
from dashboard.sweep_page import sweep_page  # noqa: E402
from dashboard.train_page import train_page  # noqa: E402

st.set_page_config(page_title="MLP training lab", page_icon="📈", layout="wide")

pages.navigation({pages.TRAIN: train_page, pages.HISTORY: history_page, pages.COMPARE: compare_page,
                  pages.SWEEP: sweep_page}).run()
# Last: the tab's id arrives with a rerun, and a rerun that cut into the first run (before the sidebar's widgets
# existed) left them at their minimums.
identify_tab()
