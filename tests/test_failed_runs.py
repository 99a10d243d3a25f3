"""Runs that fail before their first epoch (no data, a batch larger than the data) are still recorded.

The README promises that every run, CLI or dashboard, is in the run history. These runs fail while
TrainingRun loads the data or builds its Trainer, before it used to create its record: now they land
in the store as "failed" with the reason, and the History and Train pages show them like any other.
"""
from __future__ import annotations

import socket
import threading
from multiprocessing import Pipe

import pytest
from streamlit.testing.v1 import AppTest

from history_helpers import HISTORY_APP, REPO_ROOT, ManagerTracker, clear_streamlit_caches
from test_dashboard_app import shown as as_read
from core.config import RunConfig
from core.runs.store import Store
from core.runs.worker import serve

pytestmark = [pytest.mark.usefixtures("clean_data_cache"), pytest.mark.slow]  # AppTest with real workers


@pytest.fixture
def no_fashion_download(monkeypatch):
    """FashionMNIST's download fails for real (a closed local port), with or without a network."""
    from torchvision import datasets

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [f"http://127.0.0.1:{port}/"])


@pytest.fixture
def restore_sigterm():
    import signal

    previous = signal.getsignal(signal.SIGTERM)  # cmd_train installs its own SIGTERM handler
    yield
    signal.signal(signal.SIGTERM, previous)


def test_cli_run_without_fashion_mnist_files_is_recorded_as_failed(tmp_path, capsys, restore_sigterm,
                                                                   no_fashion_download):
    from core.cli import main

    db = tmp_path / "runs.db"
    code = main(["train", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path), "--db", str(db),
                 "--hidden", "16", "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    [run] = Store(db).list_runs()  # before: the store had no run at all
    assert run["status"] == "failed" and run["origin"] == "cli" and run["dataset"] == "fashion_mnist"
    assert "FashionMNIST" in run["message"] and str(tmp_path / "FashionMNIST" / "raw") in run["message"]
    assert "urlopen" not in run["message"] and "urlopen" not in err
    assert run["config"]["hidden_sizes"] == [16]
    assert Store(db).epochs(run["id"]) == [] and run["test_acc"] is None


def test_cli_run_whose_batch_is_larger_than_the_data_is_recorded_as_failed(tmp_path, capsys, restore_sigterm):
    from core.cli import main

    db = tmp_path / "runs.db"
    code = main(["train", "--data-dir", str(tmp_path), "--db", str(db), "--batch-size", "3201", "--device", "cpu"])
    assert code == 2
    [run] = Store(db).list_runs()
    assert run["status"] == "failed" and "3201" in run["message"]


def test_dashboard_run_that_fails_in_its_worker_is_recorded_as_failed(tmp_path, no_fashion_download):
    db = tmp_path / "runs.db"
    ours, theirs = Pipe()
    worker = threading.Thread(target=serve, args=(theirs, str(tmp_path), str(db), 1, None), daemon=True)
    worker.start()
    assert ours.recv() == ("ready",)
    config = RunConfig(dataset="fashion_mnist", hidden_sizes=(8,), epochs=1, device="cpu")
    ours.send(("start", "dash0failed", config.to_dict(), [(1, 0.5)]))
    kind, message = ours.recv()
    ours.send(("close",))
    worker.join(10)
    assert kind == "error" and "FashionMNIST" in message
    run = Store(db).get_run("dash0failed")  # before: KeyError, the run was never stored
    assert run["status"] == "failed" and run["origin"] == "dashboard" and run["message"] == message


@pytest.fixture
def store_with_a_failed_run(tmp_path, monkeypatch, restore_sigterm, no_fashion_download):
    from core.cli import main

    db = tmp_path / "runs.db"
    assert main(["train", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path), "--db", str(db)]) == 2
    monkeypatch.setenv("RUNS_DB", str(db))
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    clear_streamlit_caches()
    managers = ManagerTracker(monkeypatch)
    yield Store(db).list_runs()[0]
    managers.shutdown()
    clear_streamlit_caches()


def test_history_lists_and_opens_a_failed_run_without_epochs(store_with_a_failed_run):
    run = store_with_a_failed_run
    at = AppTest.from_string(HISTORY_APP, default_timeout=60)
    at.query_params["run"] = run["id"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["run_id"]) == [run["id"]] and "failed" in table["status"].iloc[0]
    assert at.selectbox(key="hist_open").value == run["id"]
    shown = " ".join(as_read(e.value) for e in [*at.error, *at.warning, *at.info, *at.markdown, *at.caption])
    assert "FashionMNIST" in shown  # the reason is on the page


def test_train_page_link_to_a_failed_run_shows_its_reason(store_with_a_failed_run):
    run = store_with_a_failed_run
    at = AppTest.from_file(str(REPO_ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.query_params["run"] = run["id"]
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(as_read(e.value) for e in [*at.error, *at.warning, *at.info, *at.markdown, *at.caption])
    assert "failed" in shown.lower() and "FashionMNIST" in shown
