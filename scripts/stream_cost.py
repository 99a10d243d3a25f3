"""What watching a run costs: the page's CPU while a run streams into the Train page, and the run's epoch time on
the dashboard against the same run from the CLI (benchmark, not a test; Linux /proc, Chromium, full MNIST).

For each of --pairs pairs, alternating: the dashboard (a Chromium tab on /?epochs=N, Train pressed, until it shows
the run finished) and `python -m core train --epochs N` with the same default threads. Prints per pair the page's
CPU in cores while the run streams (from the 5th epoch drawn to the last: the charts' first draw, which loads
Plotly.js once per page, and the run's end, one page rerun, are left out and printed apart), counting the server's
own threads (not its training worker) and every Chromium process, and both median epoch times (warm-up excluded),
then the medians.

    python scripts/stream_cost.py [--pairs 3] [--epochs 50] [--data-dir ../shared/datasets]
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser tests' helpers (core, dashboard: installed)

from browser_support import MS, dashboard, launch, require_browser  # noqa: E402
from support import shared_dataset_dir  # noqa: E402
from tab_load import browser_cpu_seconds, cpu_seconds, wait_quiet  # noqa: E402

from core.engine.train import median_timed_epoch  # noqa: E402


FINISHED_JS = "() => (document.querySelector('.st-key-live_status') || {innerText: ''}).innerText.includes('Finished')"
SHOWN_JS = """n => { const gd = document.querySelector('.st-key-live_acc .js-plotly-plot');
  const t = gd && gd.data && gd.data.find(d => (d.name || '').startsWith('validation'));
  return t && t.x && t.x.length >= n; }"""


def dashboard_run(page, port: int, server_pid: int, db: Path, epochs: int) -> tuple[float, float, float]:
    """(page CPU in cores while the run streamed, the same until the 5th epoch was drawn, the run's median epoch s)."""
    page.goto(f"http://localhost:{port}/?epochs={epochs}")
    train = page.locator(".st-key-train button").first
    train.wait_for(timeout=90 * MS)
    wait_quiet(server_pid)
    server0, browser0, wall0 = cpu_seconds(server_pid), browser_cpu_seconds(), time.monotonic()
    train.click()
    page.wait_for_function(SHOWN_JS, arg=5, timeout=300 * MS, polling=100)
    server1, browser1, wall1 = cpu_seconds(server_pid), browser_cpu_seconds(), time.monotonic()
    page.wait_for_function(SHOWN_JS, arg=epochs, timeout=600 * MS, polling=100)  # the last epoch drawn
    server2, browser2, wall2 = cpu_seconds(server_pid), browser_cpu_seconds(), time.monotonic()
    page.wait_for_function(FINISHED_JS, timeout=600 * MS, polling=100)
    server3, browser3, wall3 = cpu_seconds(server_pid), browser_cpu_seconds(), time.monotonic()
    end_cpu = (server3 - server2) + (browser3 - browser2)
    print(f"  the end (last epoch drawn -> 'Finished' shown, one page rerun): {end_cpu:.2f} CPU seconds in "
          f"{wall3 - wall2:.1f} s", flush=True)
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1").fetchone()[0]
        rows = conn.execute("SELECT seconds, warmup FROM epochs WHERE run_id=? ORDER BY epoch", (run_id,)).fetchall()
    epochs_timed = [{"seconds": s, "warmup": bool(w)} for s, w in rows]
    streaming = ((server2 - server1) + (browser2 - browser1)) / (wall2 - wall1)
    print(f"  streaming: server {(server2 - server1) / (wall2 - wall1):.3f} cores, Chromium "
          f"{(browser2 - browser1) / (wall2 - wall1):.3f} cores over {wall2 - wall1:.1f} s", flush=True)
    starting = ((server1 - server0) + (browser1 - browser0)) / (wall1 - wall0)
    return streaming, starting, median_timed_epoch(epochs_timed)


def cli_run(data_dir: Path, db: Path, epochs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("TRAIN_THREADS", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "-m", "core", "train", "--epochs", str(epochs), "--data-dir", str(data_dir),
                          "--db", str(db)], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["median_epoch_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--data-dir", type=Path, default=shared_dataset_dir("MNIST"))
    args = parser.parse_args()
    if args.data_dir is None:
        raise SystemExit("needs the full MNIST: --data-dir or $DATA_DIR")
    sync_api = require_browser()
    work = Path(tempfile.mkdtemp(prefix="stream_cost-"))
    page_cpu, ratios = [], []
    with dashboard(work / "server.log", args.data_dir, work / "runs.db") as (server, port):
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            for pair in range(1, args.pairs + 1):
                cores, starting, on_page = dashboard_run(page, port, server.pid, work / "runs.db", args.epochs)
                headless = cli_run(args.data_dir, work / "cli.db", args.epochs)
                page_cpu.append(cores)
                ratios.append(on_page / headless)
                print(f"pair {pair}: page {cores:.3f} cores while streaming ({starting:.2f} until the 5th epoch was "
                      f"drawn); median epoch dashboard {on_page:.3f} s, "
                      f"CLI {headless:.3f} s ({on_page / headless:.3f}x)", flush=True)
            browser.close()
    print(f"median over {args.pairs} pairs: page {statistics.median(page_cpu):.3f} cores (server threads + Chromium), "
          f"dashboard epoch time {statistics.median(ratios):.3f}x the CLI's; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
