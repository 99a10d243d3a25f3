"""The page registry (dashboard/pages.py): app.py's navigation and the switches between pages use one entry per
page, so a page's URL path is written once."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from dashboard import pages


def test_entries_have_distinct_paths_and_train_comes_first():
    assert pages.ORDER[0] == pages.TRAIN
    assert len({entry.url_path for entry in pages.ORDER}) == len(pages.ORDER)
    assert [entry.url_path for entry in pages.ORDER] == ["train", "history", "compare", "sweep"]  # URLs users have


def test_a_switch_runs_the_page_registered_for_the_entry():
    def app():
        import streamlit as st

        from dashboard import pages

        def first():
            st.markdown("first page")
            if st.button("go", key="go"):
                pages.switch_to(pages.COMPARE, cmp="c1")

        def target():
            st.markdown(f"compare page, cmp={st.query_params.get('cmp')}")

        pages.navigation({pages.HISTORY: first, pages.COMPARE: target}, default=pages.HISTORY).run()

    at = AppTest.from_function(app).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.markdown[0].value == "first page"
    at.button(key="go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [m.value for m in at.markdown] == ["compare page, cmp=c1"]
