"""Many browser tabs on one dashboard: does every tab see its run end, and does the server stay responsive?

Starts `streamlit run dashboard/app.py`, opens N Chromium tabs on the Train page (a share link picks the
settings), presses Train in each, and measures, in one run:
  - the server's /_stcore/health latency, sampled every second throughout (worst, p50);
  - the server process's own CPU (its threads, not the training workers) per open tab: idle with the tabs
    open, and while the runs train;
  - for each tab, the delay between its run ending in the store and the tab showing it ended.

    python scripts/tab_load.py --tabs 10 [--query "epochs=5&hidden=256"] [--data-dir ../shared/datasets]

Linux only (/proc). Needs Chromium and the playwright package, as the browser tests do.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the browser tests' helpers (core, dashboard: installed)

from browser_support import MS, dashboard, launch  # noqa: E402

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# The live panel's status line is bold markdown; reading only those elements keeps the probe cheap for the tab.
ENDED_JS = ("() => Array.from(document.querySelectorAll('[data-testid=\"stMarkdownContainer\"] strong')).some(e => {"
            " const t = e.textContent; return t.includes('✅ Finished') || t.includes('Finished, with a warning')"
            " || t.includes('❌ Failed') || t.includes('⚠️ Diverged'); })")
# Each tab notes (wall clock, ms) when it first shows its run's end; checked every 100 ms in the page itself.
WATCH_JS = ("() => { window.__endedAt = 0; const ended = %s;"
            " const timer = setInterval(() => {"
            " if (ended()) { window.__endedAt = Date.now(); clearInterval(timer); } },"
            " 100); }" % ENDED_JS)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads, none of its children)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


class HealthProbe(threading.Thread):
    """GET /_stcore/health every second; keeps every latency (s). A timeout counts as its full wait."""

    def __init__(self, port: int, every: float = 1.0, timeout: float = 30.0):
        super().__init__(daemon=True)
        self.url, self.every, self.timeout = f"http://127.0.0.1:{port}/_stcore/health", every, timeout
        self.latencies: list[float] = []
        self.times: list[float] = []  # time.monotonic() at each sample's start
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            begin = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                    response.read()
            except OSError:
                pass
            elapsed = time.monotonic() - begin
            self.latencies.append(elapsed)
            self.times.append(begin)
            self.stop_event.wait(max(0.0, self.every - elapsed))

    def stop(self) -> list[float]:
        self.stop_event.set()
        self.join(self.timeout + 1)
        return self.latencies


class CpuTimeline(threading.Thread):
    """Every second: cores used by the server, its workers, and the browser (for --timeline)."""

    def __init__(self, server_pid: int):
        super().__init__(daemon=True)
        self.server_pid, self.rows, self.stop_event = server_pid, [], threading.Event()

    def sample(self) -> tuple[float, float, float]:
        workers = sum(cpu_seconds(p) for p in family(self.server_pid) if p != self.server_pid)
        return cpu_seconds(self.server_pid), workers, browser_cpu_seconds()

    def run(self) -> None:
        last, begin = self.sample(), time.monotonic()
        while not self.stop_event.wait(1.0):
            now = self.sample()
            self.rows.append((time.monotonic() - begin, *(b - a for a, b in zip(last, now))))
            last = now


@dataclass
class LoadResult:
    tabs: int
    idle_cpu_per_tab: float  # server CPU (cores) per open tab, nothing training
    training_cpu_per_tab: float  # the same while the runs train (and queue)
    training_wall_s: float
    health_worst_s: float
    health_p50_s: float
    health_samples: int
    runs_ended: int
    tabs_showing_end: int
    end_delays_s: list[float] = field(default_factory=list)  # per tab: shown minus stored end

    def lines(self) -> list[str]:
        delays = sorted(self.end_delays_s)
        return [f"tabs: {self.tabs}; runs ended in the store: {self.runs_ended}; tabs showing their run's end: "
                f"{self.tabs_showing_end}",
                f"tab shows the end, after the store: worst {max(delays, default=float('nan')):.2f} s, "
                f"median {statistics.median(delays) if delays else float('nan'):.2f} s",
                f"health latency over {self.health_samples} samples: worst {self.health_worst_s * 1000:.0f} ms, "
                f"median {self.health_p50_s * 1000:.0f} ms",
                f"server CPU per open tab: idle {self.idle_cpu_per_tab * 100:.2f} % of a core, while training "
                f"{self.training_cpu_per_tab * 100:.2f} % of a core ({self.training_wall_s:.0f} s of training)"]


def browser_cpu_seconds() -> float:
    """CPU used so far by every Chromium process on the machine (the browser's tabs share the cores too)."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if b"chromium" in (proc / "cmdline").read_bytes():
                total += cpu_seconds(int(proc.name))
        except (OSError, ValueError):
            continue
    return total


def wait_quiet(pid: int, timeout: float = 60.0) -> None:
    """Until the server (and its spare worker, loading data) stop burning CPU: < 5 % of a core for 2 s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p) for p in family(pid))
        time.sleep(2)
        if sum(cpu_seconds(p) for p in family(pid)) - before < 0.1:
            return


def family(pid: int) -> list[int]:
    pids = [pid]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                pids.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return [p for p in pids if Path(f"/proc/{p}/stat").exists()]


def stored_runs(db: Path) -> dict[str, tuple[str, float | None]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return {run_id: (status, finished_at)
                for run_id, status, finished_at in conn.execute("SELECT id, status, finished_at FROM runs")}


def measure(tabs: int, query: str, data_dir: Path, workdir: Path, idle_s: float = 20.0,
            timeout_s: float = 900.0, say=print, timeline: bool = False) -> LoadResult:
    from playwright.sync_api import sync_playwright

    db, log = workdir / "runs.db", workdir / "server.log"
    with dashboard(log, data_dir, db) as (server, port), sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        probe = HealthProbe(port)
        probe.start()
        pages = []
        for i in range(tabs):
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/?{query}", timeout=120 * MS)
            page.locator(".st-key-train button").first.wait_for(timeout=120 * MS)
            pages.append(page)
        say(f"{tabs} tabs open")
        wait_quiet(server.pid)
        begin_cpu, begin, begin_browser = cpu_seconds(server.pid), time.monotonic(), browser_cpu_seconds()
        time.sleep(idle_s)
        idle_cpu = (cpu_seconds(server.pid) - begin_cpu) / (time.monotonic() - begin) / tabs
        say(f"idle: {idle_cpu * 100:.2f} % of a core per tab; the browser used "
            f"{(browser_cpu_seconds() - begin_browser) / (time.monotonic() - begin):.2f} cores")

        begin_cpu, begin, begin_browser = cpu_seconds(server.pid), time.monotonic(), browser_cpu_seconds()
        cpu_timeline = CpuTimeline(server.pid)
        if timeline:
            cpu_timeline.start()
        for page in pages:
            page.evaluate(WATCH_JS)
            page.locator(".st-key-train button").first.click(timeout=60 * MS)
        run_ids: list[str | None] = [None] * tabs
        deadline = time.monotonic() + timeout_s
        ended_at: dict[str, float] = {}
        while time.monotonic() < deadline:
            for i, page in enumerate(pages):
                if run_ids[i] is None:
                    search = page.evaluate("() => location.search")
                    if "run=" in search:
                        run_ids[i] = search.split("run=")[1].split("&")[0]
            runs = stored_runs(db)
            ended_at = {r: finished for r, (status, finished) in runs.items() if finished is not None
                        and status not in ("queued", "loading", "running")}
            if all(r is not None and r in ended_at for r in run_ids):
                break
            time.sleep(1)
        training_wall = time.monotonic() - begin
        training_cpu = (cpu_seconds(server.pid) - begin_cpu) / training_wall / tabs
        say(f"runs ended: {len(ended_at)} of {tabs} after {training_wall:.0f} s; the browser used "
            f"{(browser_cpu_seconds() - begin_browser) / training_wall:.2f} cores meanwhile")
        shown: list[float] = [0.0] * tabs
        grace = time.monotonic() + 10  # the bar is 3 s; wait a little longer to report how late a late tab is
        while time.monotonic() < grace and not all(shown):
            shown = [page.evaluate("() => window.__endedAt") / 1000 for page in pages]
            time.sleep(0.5)
        latencies = probe.stop()
        if timeline:
            cpu_timeline.stop_event.set()
            say("cores used, per second after the first click (server / workers / browser):")
            for t, server_cores, worker_cores, browser_cores in cpu_timeline.rows:
                say(f"  {t:5.0f} s  {server_cores:.2f} / {worker_cores:.2f} / {browser_cores:.2f}")
        slow = [(t - begin, lat) for t, lat in zip(probe.times, latencies) if lat > 0.25]
        say("health slower than 250 ms, at (s after the first Train click, latency s): "
            + ", ".join(f"({t:.0f}, {lat:.2f})" for t, lat in slow))
        delays = [s - ended_at[r] for s, r in zip(shown, run_ids) if s and r in ended_at]
        click_wall = time.time() - (time.monotonic() - begin)
        say("per tab (run ended, s after the first click; tab showed it, s later): " + ", ".join(
            f"({ended_at[r] - click_wall:.0f}, {s - ended_at[r]:.1f})" if s and r in ended_at else "(-, never)"
            for s, r in zip(shown, run_ids)))
        browser.close()
    return LoadResult(tabs, idle_cpu, training_cpu, training_wall, max(latencies), statistics.median(latencies),
                      len(latencies), sum(r in ended_at for r in run_ids), sum(bool(s) for s in shown), delays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tabs", type=int, default=10)
    parser.add_argument("--query", default="epochs=5&hidden=256", help="share-link settings for every tab's run")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--timeline", action="store_true", help="print the cores used each second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tab-load-") as workdir:
        result = measure(args.tabs, args.query, Path(args.data_dir), Path(workdir), idle_s=args.idle_s,
                         timeline=args.timeline)
    for line in result.lines():
        print(line)


if __name__ == "__main__":
    main()
