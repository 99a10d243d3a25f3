"""Comparisons and speedup maps kept in the run database, in a table of their own.

A report is one JSON payload (a comparison's legs and run ids, or a speedup map's cells) under an
id and a kind. The runs a comparison trained stay ordinary runs in the `runs` table; the report
only names them. Uses the Store's connection settings (WAL, busy timeout) and error type.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing

from .store import Store, StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_kind ON reports (kind, created_at);
"""

COMPARISON, SPEEDUP_MAP = "comparison", "speedup_map"


class ReportStore:
    def __init__(self, store: Store):
        self.store = store
        try:
            with closing(store._connect()) as db:
                db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot use the run database {store.path}: {exc}") from None

    @property
    def path(self):
        return self.store.path

    def save(self, kind: str, payload: dict, title: str = "", report_id: str | None = None) -> str:
        """Insert or replace a report; returns its id."""
        report_id = report_id or uuid.uuid4().hex[:12]
        created = payload.get("created_at") or time.time()
        self.store._write("INSERT OR REPLACE INTO reports (id, kind, created_at, title, payload) VALUES (?,?,?,?,?)",
                          (report_id, kind, created, title, json.dumps(payload)))
        return report_id

    def get(self, report_id: str) -> dict:
        """The payload; KeyError if there is no such report."""
        rows = self.store._read("SELECT payload FROM reports WHERE id=?", (report_id,))
        if not rows:
            raise KeyError(report_id)
        return json.loads(rows[0]["payload"])

    def list(self, kind: str, limit: int = 50) -> list[dict]:
        """Newest first: [{id, created_at, title}] (payloads are read with get)."""
        rows = self.store._read("SELECT id, created_at, title FROM reports WHERE kind=? ORDER BY created_at DESC "
                                "LIMIT ?", (kind, int(limit)))
        return [dict(row) for row in rows]

    def delete(self, report_id: str) -> None:
        self.store._write("DELETE FROM reports WHERE id=?", (report_id,))


def open_reports(store: Store | None) -> ReportStore | None:
    """The reports beside a run store, or None when there is no store or its file cannot be used."""
    if store is None:
        return None
    try:
        return ReportStore(store)
    except StoreError:
        return None


def recent_reports(reports: ReportStore | None, kind: str, limit: int = 20) -> list[dict]:
    """Newest first; [] without a store or when it cannot be read (the page still works)."""
    if reports is None:
        return []
    try:
        return reports.list(kind, limit)
    except StoreError:
        return []
