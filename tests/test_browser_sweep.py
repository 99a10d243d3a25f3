"""The Sweep page in real Chromium (slow lane): a small sweep started from the page streams its trials into chart
elements that stay mounted, fills the results table with links to each trial's run, and opens the best trial in
Train. Trials train on the 5,000-digit sample (DATA_DIR is an empty folder)."""
from __future__ import annotations

import sqlite3

import pytest

from browser_support import MS, dashboard, launch, require_browser

sync_api = require_browser()

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRIALS = 4
FINISHED_JS = "() => document.querySelector('.st-key-sweep_status')?.innerText.includes('Finished')"
# Tags each chart element the first time it is seen, and logs the trace count of the trial-curves chart.
RECORDER_JS = """() => {
  window.__log = [];
  window.__rec = setInterval(() => {
    const row = {};
    for (const key of ['sweep_curves', 'sweep_cost']) {
      const gd = document.querySelector(`.st-key-${key} .js-plotly-plot`);
      if (!gd || !gd.data) continue;
      if (!gd.__tag) gd.__tag = `${key}-${Math.random()}`;
      row[key] = {tag: gd.__tag, traces: gd.data.length};
    }
    window.__log.push(row);
  }, 100);
}"""


def on_train(url: str) -> bool:
    """The Train page with a run: /train?run=... or the app's root (Train is the default page)."""
    return "run=" in url and "/sweep" not in url


@pytest.fixture
def server(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with dashboard(tmp_path / "server.log", data_dir, tmp_path / "runs.db") as (process, port):
        yield {"port": port, "db": tmp_path / "runs.db"}


def test_a_sweep_streams_on_its_page_and_opens_its_best_trial(server):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"http://localhost:{server['port']}/sweep")
            start = page.get_by_role("button", name="Start sweep")
            start.wait_for(timeout=90 * MS)
            page.get_by_label("Trials", exact=True).fill(str(TRIALS))
            page.get_by_label("Epochs per trial").fill("8")
            page.get_by_label("Epochs per trial").press("Enter")
            page.wait_for_function("() => document.body.innerText.includes('--trials 4 --epochs 8')", timeout=30 * MS)
            page.evaluate(RECORDER_JS)
            start.click()
            page.wait_for_function(FINISHED_JS, timeout=240 * MS, polling=200)
            page.wait_for_function("n => document.querySelector('.st-key-sweep_curves .js-plotly-plot')"
                                   "?.data?.length === n", arg=TRIALS, timeout=30 * MS)
            log = page.evaluate("() => { clearInterval(window.__rec); return window.__log; }")
            assert page.locator('[data-testid="stException"]').count() == 0
            assert "sweep=" in page.url
            sweep_url = page.url
            page.get_by_role("button", name="Open the best trial").click()
            page.wait_for_url(on_train, timeout=30 * MS)
            page.locator(".st-key-live_status").wait_for(timeout=60 * MS)
            best_run = page.url.split("run=")[1].split("&")[0]
            page.goto(sweep_url)  # the sweep again, from its link; then another trial from the table's picker
            picker = page.get_by_label("Trial", exact=True)
            picker.wait_for(timeout=60 * MS)
            picker.click()
            options = page.get_by_role("option")
            assert options.count() == TRIALS
            options.nth(TRIALS - 1).click()  # the worst of them
            page.get_by_role("button", name="Open in Train").click()
            page.wait_for_url(on_train, timeout=30 * MS)
            page.locator(".st-key-live_status").wait_for(timeout=60 * MS)
            worst_run = page.url.split("run=")[1].split("&")[0]
        finally:
            browser.close()
    for key in ("sweep_curves", "sweep_cost"):
        tags = {row[key]["tag"] for row in log if key in row}
        assert len(tags) == 1, f"{key} was replaced during the sweep: {tags}"
    counts = [row["sweep_curves"]["traces"] for row in log if "sweep_curves" in row]
    # the trials appeared while the sweep ran, not all at its end (each trial: 8 epochs of a few tenths of a second)
    assert counts == sorted(counts) and counts[-1] == TRIALS and counts[0] < TRIALS and len(set(counts)) > 2
    with sqlite3.connect(server["db"]) as db:
        rows = db.execute("SELECT id, sweep_id, trial, status FROM runs WHERE sweep_id IS NOT NULL").fetchall()
    assert len(rows) == TRIALS and sorted(r[2] for r in rows) == list(range(TRIALS))
    assert best_run in {r[0] for r in rows} and worst_run in {r[0] for r in rows} and worst_run != best_run
