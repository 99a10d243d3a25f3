"""Benchmark (not a test): server memory around big weights-file uploads on the History page, in Chromium.

Starts `streamlit run dashboard/app.py`, then for each upload opens a tab on History, uploads a weights file
of a 784-8192-5120-10 MLP (185 MiB), waits for "Loaded", closes the tab, and prints the server's resident
memory (RSS): loaded, 2 s after the tab closed, and after the closed tab's session has expired.

    python scripts/upload_memory.py --uploads 3 [--ttl 5]

Measured 2026-12-03 (2 cores, 185 MiB file, --ttl 5 and the default 120 s alike): before the fix the server
kept +191 MiB after the tab closed, for good: tracemalloc showed the file's bytes (one 184.7 MiB block from the
upload handler) still alive after the session expired. After it: +6 MiB after one upload, +56 to +106 MiB
after three, with no tensor and no Python object left (gc and tracemalloc in the server: 0 MiB of tensors,
Python-traced memory unchanged), so what stays is the C allocator's, not the app's.
Linux only (/proc). Needs Chromium and the playwright package, as the browser tests do.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser tests' helpers (core, dashboard: installed)

from browser_support import MS, dashboard, launch  # noqa: E402
from core.engine.memory import process_rss  # noqa: E402


def rss_mib(pid: int) -> float:
    return process_rss(pid) / 2**20


def weights_file(path: Path) -> Path:
    from core.config import RunConfig
    from core.exchange.weights import WeightsFile, weights_bytes
    from core.engine.model import build_mlp

    config = RunConfig(hidden_sizes=(8192, 5120), device="cpu")
    state = build_mlp(config, 784, 10).state_dict()
    path.write_bytes(weights_bytes(WeightsFile(config, state, {"id": "big", "schedule": [[5, 0.5]]})))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument("--ttl", type=int, default=5, help="server.disconnectedSessionTTL, seconds (default 5)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="upload-memory-"))
    (work / "data").mkdir()
    big = weights_file(work / "big.pt")
    result = {"file_mib": round(big.stat().st_size / 2**20, 1), "ttl_s": args.ttl, "uploads": []}
    ttl = ("--server.disconnectedSessionTTL", str(args.ttl))
    with dashboard(work / "server.log", work / "data", work / "runs.db", ttl) as (server, port), \
            sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context()  # one visit first: imports and caches are not the upload's
        context.new_page().goto(f"http://127.0.0.1:{port}/history")
        time.sleep(5)
        context.close()
        time.sleep(args.ttl + 4)
        result["baseline_mib"] = round(rss_mib(server.pid), 1)
        for _ in range(args.uploads):
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/history")
            page.get_by_text("Load a weights file").first.click(timeout=120 * MS)
            page.locator('input[type="file"]').set_input_files(str(big))
            page.get_by_text("Loaded mnist").first.wait_for(timeout=300 * MS)
            time.sleep(2)
            loaded = rss_mib(server.pid)
            context.close()
            time.sleep(2)
            closed = rss_mib(server.pid)
            time.sleep(args.ttl + 6)
            result["uploads"].append({"loaded_mib": round(loaded, 1), "tab_closed_mib": round(closed, 1),
                                      "session_expired_mib": round(rss_mib(server.pid), 1)})
        browser.close()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
