"""The server killed mid-run: its worker carries on alone, records the run and exits.

The run ends "interrupted", its epochs kept and the weights of its last finished epoch saved, so
continuing it trains exactly as if it had never stopped. The worker's own SIGKILL is in
test_manager.py, the CLI's SIGTERM in test_cli_faults.py. The real-server case runs
`streamlit run` and Chromium (slow lane).
"""
from __future__ import annotations

import io
import threading
import time
from multiprocessing import Pipe

import pytest
import torch

from history_helpers import EMPTY_DATA_DIR
from core.config import RunConfig
from core.runs.training_run import TrainingRun
from core.runs.store import Store
from core.runs.worker import serve

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

CONFIG = RunConfig(hidden_sizes=(64,), batch_size=100, device="cpu", threads=1)


def saved_epoch(store: Store, run_id: str) -> int:
    """The epoch whose weights the store holds."""
    return torch.load(io.BytesIO(store.load_checkpoint(run_id)), weights_only=True)["epochs_done"]


def continues_like_an_uninterrupted_run(store: Store, run_id: str, lr: float) -> None:
    kept = len(store.epochs(run_id))
    resumed = TrainingRun.resume(run_id, store, data_dir=EMPTY_DATA_DIR)
    resumed.train_phase(1, lr)
    reference = TrainingRun(CONFIG, data_dir=EMPTY_DATA_DIR)
    reference.train_phase(kept + 1, lr)
    got, want = resumed.epochs[-1], reference.epochs[-1]
    assert got.epoch == want.epoch == kept + 1
    assert (got.train_loss, got.val_loss) == (want.train_loss, want.val_loss)


def test_a_worker_whose_server_is_gone_records_interrupted_and_exits(tmp_path):
    db = tmp_path / "runs.db"
    ours, theirs = Pipe()
    worker = threading.Thread(target=serve, args=(theirs, str(EMPTY_DATA_DIR), str(db), 1, None), daemon=True)
    worker.start()
    assert ours.recv() == ("ready",)
    ours.send(("start", "gone0server", CONFIG.to_dict(), [(500, 0.5)]))
    epochs = 0
    while epochs < 3:
        epochs += ours.recv()[0] == "epoch"
    ours.close()  # what a SIGKILL of the server does to the worker's socket
    worker.join(30)
    assert not worker.is_alive()

    store = Store(db)
    row = store.get_run("gone0server")
    # before: "failed" with the message "EOFError", and no way to continue
    assert row["status"] == "interrupted" and "server ended" in row["message"], row["message"]
    kept = len(store.epochs("gone0server"))
    assert kept >= 3 and saved_epoch(store, "gone0server") == kept
    continues_like_an_uninterrupted_run(store, "gone0server", 0.5)


# -- the real server, killed -------------------------------------------------------------------------------------
def process_exists(pid: int) -> bool:
    """Whether a process is still running (a zombie waiting to be reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.browser
def test_server_sigkill_leaves_the_run_interrupted_and_continuable_after_a_restart(tmp_path):
    from browser_support import MS, dashboard, launch, require_browser

    sync_api = require_browser()
    data_dir, db = tmp_path / "data", tmp_path / "runs.db"
    data_dir.mkdir()  # empty: MNIST is the 5,000-digit sample
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            with dashboard(tmp_path / "server.log", data_dir, db) as (server, port):
                page.goto(f"http://localhost:{port}/?hidden=512,512&epochs=50&lr=0.1")
                page.locator(".st-key-train button").first.click(timeout=60 * MS)
                deadline = time.monotonic() + 120
                while not (db.exists() and (runs := Store(db).list_runs())
                           and len(Store(db).epochs(runs[0]["id"])) >= 3):
                    assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                    time.sleep(0.1)
                run_id = runs[0]["id"]
                worker_pid = int(runs[0]["owner"].split("|")[1])
                server.kill()  # SIGKILL: no atexit, no shutdown; the worker is left on its own
                server.wait(10)
            deadline = time.monotonic() + 30
            while process_exists(worker_pid):  # it records the run and exits by itself
                assert time.monotonic() < deadline, "the orphaned worker did not exit"
                time.sleep(0.1)

            store = Store(db)
            row = store.get_run(run_id)
            assert row["status"] == "interrupted" and "server ended" in row["message"], row["message"]
            kept = len(store.epochs(run_id))
            assert kept >= 3 and saved_epoch(store, run_id) == kept

            # the restarted server shows it interrupted, with Continue, and continues it
            with dashboard(tmp_path / "server2.log", data_dir, db) as (server, port):
                page.goto(f"http://localhost:{port}/?run={run_id}")
                page.wait_for_function("() => document.body.innerText.includes('interrupted')", timeout=60 * MS)
                assert "Training failed" not in page.inner_text("body")
                page.locator(".st-key-continue button").first.click(timeout=60 * MS)
                deadline = time.monotonic() + 120
                while len(store.epochs(run_id)) < kept + 2:
                    assert time.monotonic() < deadline, (tmp_path / "server2.log").read_text()
                    time.sleep(0.2)
                epochs = store.epochs(run_id)
                assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
                assert store.get_run(run_id)["status"] == "running"
        finally:
            browser.close()
    assert store.get_run(run_id)["status"] == "interrupted"  # the second server's SIGTERM: shut down in order
