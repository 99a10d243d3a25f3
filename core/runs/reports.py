"""Comparisons and speedup maps kept in the run database (the store's `reports` table), read for pages that
must work without a database.

A report is one JSON payload (a comparison's legs and run ids, or a speedup map's cells) under an id and a kind.
The runs a comparison trained stay ordinary runs; the report only names them. Writing goes through
Store.save_report; a failed write is the caller's to report.
"""
from __future__ import annotations

from .store import Store, StoreError

COMPARISON, SPEEDUP_MAP = "comparison", "speedup_map"


def stored_report(store: Store | None, report_id: str, kind: str) -> dict | None:
    """The payload of this kind of report; None without a store, when there is none, or when it cannot be read."""
    if store is None:
        return None
    try:
        return store.report(report_id, kind)
    except (KeyError, StoreError):
        return None


def recent_reports(store: Store | None, kind: str, limit: int = 20) -> list[dict]:
    """Newest first; [] without a store or when it cannot be read (the page still works)."""
    if store is None:
        return []
    try:
        return store.reports(kind, limit)
    except StoreError:
        return []
