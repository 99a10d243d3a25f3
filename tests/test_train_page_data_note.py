"""The idle Train page's note about the data: what a run will get, from what is known, in plain words.

Runs load their data in worker processes, so the page learns from the store what the last run got:
after a run fell back to the 5,000-image sample it no longer says "a run downloads it first". A
DATA_DIR that names a missing folder is a warning that names the variable.
"""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from history_helpers import REPO_ROOT, ManagerTracker, clear_streamlit_caches
from test_dashboard_app import shown
from core.config import RunConfig
from core.engine.data import SOURCE_SAMPLE, clear_cache
from core.runs.store import Store

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow


@pytest.fixture
def page_env(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    monkeypatch.setenv("RUNS_DB", str(tmp_path / "runs.db"))
    clear_streamlit_caches()
    clear_cache()  # an earlier test's failed download is remembered per process
    managers = ManagerTracker(monkeypatch)
    yield data_dir, Store(tmp_path / "runs.db")
    managers.shutdown()
    clear_streamlit_caches()


def idle_train_page() -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_note_before_any_run_then_after_a_run_on_the_offline_sample(page_env):
    data_dir, store = page_env
    [before] = [shown(i.value) for i in idle_train_page().info if "MNIST" in i.value]
    assert "a run downloads it first" in before and str(data_dir) in before

    store.create_run(RunConfig().to_dict(), device="CPU", data_source=SOURCE_SAMPLE, torch_version="",
                     parameters=25450, origin="dashboard")
    [after] = [shown(i.value) for i in idle_train_page().info if "MNIST" in i.value]
    assert "downloads it first" not in after  # before the fix: the same "the first run downloads it"
    assert "5,000-image MNIST sample" in after and "urlopen" not in after


def test_data_dir_naming_a_missing_folder_is_a_warning(page_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "typo"))
    at = idle_train_page()
    [warning] = [shown(w.value) for w in at.warning if "DATA_DIR" in shown(w.value)]
    assert str(tmp_path / "typo") in warning and "does not exist" in warning
    assert not (tmp_path / "typo").exists()
