"""Many tabs, one server, real Chromium (slow lane).

Ten tabs on the Train page each start a run: every run ends, every tab shows its own run's end within 3 s of
it ending in the store, and /_stcore/health (sampled every second) never takes 0.5 s. A hidden tab sends the
server nothing (no websocket frame, no live-feed request), and catches up at once when shown; another tab on
the same run must confirm a Stop. Figures are printed (pytest -s shows them).
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from browser_support import MS, dashboard, launch, require_browser
from support import shared_dataset_dir

sync_api = require_browser()
from tab_load import measure  # noqa: E402

# a real Streamlit server driven by Chromium
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Page Visibility as a browser sets it when the user switches to another tab or minimizes the window.
SET_VISIBILITY_JS = """hidden => {
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => hidden ? "hidden" : "visible"});
  Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
STOP_TEXT_JS = "() => document.querySelector('.st-key-stop button')?.innerText.trim()"
PROGRESS_JS = "() => document.querySelector('[data-testid=\"stProgress\"]')?.textContent || ''"


def data_dir(tmp_path: Path) -> Path:
    """Full MNIST where it is present; else an empty folder (the server uses the 5,000-digit sample)."""
    if shared_dataset_dir("MNIST") is not None:
        return shared_dataset_dir("MNIST")
    empty = tmp_path / "data"
    empty.mkdir()
    return empty


@pytest.mark.slow
def test_ten_tabs_each_see_their_run_end_while_health_stays_fast(tmp_path):
    result = measure(10, "epochs=5&hidden=256", data_dir(tmp_path), tmp_path, idle_s=10)
    print("\n" + "\n".join(result.lines()))
    assert result.runs_ended == 10
    assert result.tabs_showing_end == 10
    assert max(result.end_delays_s) < 3.0
    assert result.health_worst_s < 0.5


@pytest.mark.slow
def test_hidden_tab_stops_polling_and_catches_up_when_shown(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    with dashboard(tmp_path / "server.log", empty, tmp_path / "runs.db") as (_server, port), \
            sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        sent: list[float] = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda _payload: sent.append(time.monotonic())))
        # while the run trains the page asks the live feed's route (dashboard/live_feed.py), not the websocket
        page.on("request", lambda request: "/live/runs/" in request.url and sent.append(time.monotonic()))
        page.goto(f"http://127.0.0.1:{port}/?epochs=50&hidden=1024,1024", timeout=120 * MS)
        page.locator(".st-key-train button").first.click(timeout=120 * MS)
        page.wait_for_function(f"() => ({PROGRESS_JS})().includes('Epoch ')", timeout=120 * MS)

        def frames_during(seconds: float) -> int:
            begin = time.monotonic()
            page.wait_for_timeout(seconds * MS)  # Playwright delivers the frame events while it waits
            return sum(begin <= t for t in sent)

        visible = frames_during(4)
        page.evaluate(SET_VISIBILITY_JS, True)
        page.wait_for_timeout(500)  # a request already on its way
        hidden = frames_during(5)
        shown_at = time.monotonic()
        progress = page.evaluate(PROGRESS_JS)
        page.evaluate(SET_VISIBILITY_JS, False)
        page.wait_for_function(f"old => ({PROGRESS_JS})() !== old", arg=progress, timeout=10 * MS)
        caught_up = time.monotonic() - shown_at
        print(f"\nrequests to the server: visible {visible} in 4 s, hidden {hidden} in 5 s; "
              f"shown again: progress redrawn after {caught_up:.2f} s")
        assert visible >= 2
        assert hidden == 0
        assert caught_up < 2.0
        # Another tab on the same run's link is not the tab that started it: its Stop asks first.
        other = browser.new_page()
        other.goto(f"http://127.0.0.1:{port}/{page.evaluate('() => location.search')}", timeout=60 * MS)
        other.wait_for_function(f"() => ({STOP_TEXT_JS})() === 'Stop…'", timeout=30 * MS)
        assert page.evaluate(STOP_TEXT_JS) == "Stop"
        page.locator(".st-key-stop button").first.click()
        browser.close()
