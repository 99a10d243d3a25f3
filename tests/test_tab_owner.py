"""Which browser tab owns a run: its tab id, or the session's own token when the run started before the tab's id
arrived (a click right after the page loaded; CI saw the starting tab's Stop ask for confirmation)."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest


def page():
    import streamlit as st

    from dashboard.state import owns, session_owner

    before = session_owner()  # no tab id yet: the session's token
    if st.button("tab id arrives", key="arrive"):
        st.session_state.tab_identity = {"tab": "tab-1234"}
    st.session_state.setdefault("started_under", before)
    st.text(f"owner={session_owner()}")
    st.text(f"owns_early={owns(st.session_state.started_under)}")
    st.text(f"owns_tab={owns('tab-1234')}")
    st.text(f"owns_other={owns('someone-else')} owns_empty={owns('')}")


def test_a_run_started_before_the_tab_id_arrived_is_still_this_tabs():
    at = AppTest.from_function(page).run()
    texts = [t.value for t in at.text]
    assert "owns_early=True" in texts and "owns_tab=False" in texts
    at.button(key="arrive").click().run()
    at.run()
    texts = [t.value for t in at.text]
    assert "owner=tab-1234" in texts
    assert "owns_early=True" in texts and "owns_tab=True" in texts
    assert "owns_other=False owns_empty=False" in texts
