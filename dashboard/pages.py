"""The app's pages, registered once: each page's title, icon and URL path, for app.py's navigation and for every
switch or link to a page.

Streamlit finds a registered page by its url_path alone, so a link needs only the page's entry here, never its
module (the History page's run detail switches to Train without importing it, and without an import cycle).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import streamlit as st


class PageEntry(NamedTuple):
    title: str
    icon: str
    url_path: str


TRAIN = PageEntry("Train", "📈", "train")  # the default page: Streamlit serves it at the app's root URL too
HISTORY = PageEntry("History", "🗂️", "history")
COMPARE = PageEntry("Compare", "⚖️", "compare")
SWEEP = PageEntry("Sweep", "🧪", "sweep")
ORDER = (TRAIN, HISTORY, COMPARE, SWEEP)  # the navigation menu's order


def navigation(draw: Mapping[PageEntry, Callable[[], None]], default: PageEntry = TRAIN):
    """st.navigation over the pages in `draw` (each drawn by its function), in ORDER; returns the page to run."""
    return st.navigation([st.Page(draw[entry], title=entry.title, icon=entry.icon, url_path=entry.url_path,
                                  default=entry == default) for entry in ORDER if entry in draw])


def switch_to(entry: PageEntry, **query_params: str) -> None:
    """st.switch_page to a registered page, with these query parameters."""
    st.switch_page(st.Page(_drawn_by_navigation, title=entry.title, icon=entry.icon, url_path=entry.url_path),
                   query_params=query_params)


def _drawn_by_navigation() -> None:
    """Never called: a switch runs the function registered for the url_path in navigation()."""
