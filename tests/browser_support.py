"""What the real-browser tests share: Debian's Chromium via Playwright, and the dashboard on a free port.

Never `playwright install` (it cannot download here): Playwright drives /usr/bin/chromium.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
MS = 1000  # Playwright timeouts are in milliseconds


def require_browser():
    """Skip the calling test module unless Chromium and the playwright package are both present."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"the server was not healthy within {timeout} s:\n{log.read_text()}")


@contextlib.contextmanager
def dashboard(log: Path, data_dir, runs_db, options: tuple[str, ...] = ()):
    """`streamlit run dashboard/app.py` (with any extra command-line `options`) on a free port until the block
    ends; yields (process, port)."""
    env = dict(os.environ, DATA_DIR=str(data_dir), RUNS_DB=str(runs_db), PYTHONUNBUFFERED="1")
    env.pop("TRAIN_THREADS", None)
    with streamlit_app(log, "dashboard/app.py", env, options) as running:
        yield running


@contextlib.contextmanager
def streamlit_app(log: Path, app: str, env: dict, options: tuple[str, ...] = ()):
    """`streamlit run <app>` from the repository root on a free port until the block ends; yields (process, port).

    No file watcher: the app's sources may change under a running test, and watching costs CPU.
    """
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", app, "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", *options]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(port, process, log)
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
