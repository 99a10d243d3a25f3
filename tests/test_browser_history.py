"""The History page in a real browser: a server with two stored runs, runs picked in the multiselect,
the overlay chart drawn with one trace per run, a run opened and evaluated, no exception anywhere.

Drives Debian's /usr/bin/chromium through Playwright (never `playwright install`); skipped where
either is missing. The History page reads the store only, so no training worker starts.
"""
from __future__ import annotations

import threading
import time

import pytest

from browser_support import MS, dashboard, launch, require_browser
from history_helpers import EMPTY_DATA_DIR, SMALL, sample_data
from core.config import Phase
from core.runs.training_run import TrainingRun
from core.runs.store import Store

# a real Streamlit server driven by Chromium
pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRACES_JS = "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => (el.data || []).length)"

require_browser()


@pytest.fixture
def server(tmp_path):
    """`streamlit run dashboard/app.py` on a free port, RUNS_DB pre-filled with two runs."""
    db = tmp_path / "runs.db"
    store = Store(db)
    data = sample_data()
    ids = []
    for config, phases in ((SMALL, [Phase(2, 0.5), Phase(1, 0.1)]),
                           (SMALL.replace(hidden_sizes=(32,)), [Phase(2, 0.5)])):
        run = TrainingRun(config, store=store, dataset=data)
        run.run_schedule(phases)
        ids.append(run.id)
    log = tmp_path / "server.log"
    with dashboard(log, EMPTY_DATA_DIR, db) as (_process, port):
        yield {"port": port, "ids": ids, "log": log}


def pick(page, key: str, text: str, multi: bool = False) -> None:
    """Choose the option containing `text` in the selectbox or multiselect with this widget key."""
    box = page.locator(f".st-key-{key} input[role='combobox']").first
    box.click()
    box.fill(text)  # filters the options
    page.get_by_role("option").filter(has_text=text).first.click()
    if multi:
        page.keyboard.press("Escape")  # close the list (in a selectbox, Escape would clear the choice)


def test_history_overlay_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    first, second = server["ids"]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60 * MS)
            page.goto(f"http://127.0.0.1:{server['port']}/history")
            page.get_by_text("Run history").first.wait_for()
            page.locator(".st-key-hist_selected").wait_for()
            assert page.evaluate(TRACES_JS) == []  # nothing selected, no overlay yet

            pick(page, "hist_selected", first, multi=True)
            page.wait_for_function(f"() => ({TRACES_JS})().filter(n => n === 1).length === 2", polling=100)
            pick(page, "hist_selected", second, multi=True)
            # the two overlay charts (validation loss and accuracy), each with one trace per run
            # (during a rerun the old one-trace charts linger for a moment: wait until only the new ones are left)
            page.wait_for_function(f"() => {{ const n = ({TRACES_JS})(); return n.length === 2 && "
                                   f"n.every(k => k === 2); }}", polling=100)
            names = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                                  ".map(el => el.data.map(t => t.name))")
            assert all(any("hidden 16" in n for n in chart) and any("hidden 32" in n for n in chart)
                       for chart in names), names
            assert page.locator("[data-testid='stException']").count() == 0

            pick(page, "hist_open", second)
            page.wait_for_function("() => document.body.innerText.includes('Best val accuracy')", polling=100)
            page.get_by_role("tab", name="Evaluation").click()
            page.wait_for_function("() => document.body.innerText.includes('Mistakes')", polling=100)
            page.locator("[data-testid='stImage'] img").first.wait_for()
            page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
            assert page.locator("[data-testid='stException']").count() == 0

            # the run's share link opens the Train page with its settings in the sidebar
            page.get_by_role("tab", name="Export & share").click()
            link = page.locator("[data-testid='stCode'] code").first.inner_text().strip()
            assert link.startswith(f"http://127.0.0.1:{server['port']}/?") and "hidden=32" in link
            page.goto(link)
            page.wait_for_function("() => document.body.innerText.includes('filled in from a share link')",
                                   polling=100)
            hidden = page.locator(".st-key-cfg_hidden").get_by_role("slider").first
            assert hidden.input_value() == "32"
            assert page.get_by_text("Page not found").count() == 0
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()
    log = server["log"].read_text()
    assert "Traceback" not in log, log


def test_history_page_follows_a_training_run_without_a_reload(tmp_path):
    """A run trains in this process (one epoch at a time, on our signal); the open page shows each new
    epoch in the overlay and in the opened run's streamed charts (the same plots, points appended), and the run's
    end, by itself."""
    from playwright.sync_api import sync_playwright

    db = tmp_path / "runs.db"
    store = Store(db)
    run = TrainingRun(SMALL, store=store, dataset=sample_data())
    gate = threading.Semaphore(0)
    trainer = threading.Thread(target=run.train_phase, args=(3, 0.5),
                               kwargs={"on_epoch": lambda _: gate.acquire(timeout=120)}, daemon=True)
    trainer.start()
    points = ("() => ['overlay_loss', 'overlay_acc', 'detail_loss', 'detail_acc'].map(key => {"
              " const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);"
              " return el && el.data && el.data[0] ? el.data[0].x.length : null; })")
    detail = ("() => ['detail_loss', 'detail_acc'].map(key => {"
              " const plots = document.querySelectorAll(`.st-key-${key} .js-plotly-plot`);"
              " return plots.length ? {plots: plots.length, tag: plots[0].__tag || null, stats: plots[0].__streamChart}"
              " : null; })")

    def shows(epochs: int, timeout_s: float = 60, charts: int = 4) -> None:  # the first `charts` of `points`
        page.wait_for_function(f"() => ({points})().slice(0, {charts}).every(n => n === {epochs})", polling=100,
                               timeout=timeout_s * MS)

    log = tmp_path / "server.log"
    with dashboard(log, EMPTY_DATA_DIR, db) as (_process, port), sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60 * MS)
            while len(store.epochs(run.id)) < 1:
                time.sleep(0.05)
            page.goto(f"http://127.0.0.1:{port}/history")
            page.get_by_text("1 run training").wait_for()
            pick(page, "hist_selected", run.id, multi=True)
            pick(page, "hist_open", run.id)
            shows(1)
            page.evaluate("() => ['detail_loss', 'detail_acc'].forEach(key => {"
                          " document.querySelector(`.st-key-${key} .js-plotly-plot`).__tag = key; })")
            gate.release()  # epoch 2 is trained and stored; nobody touches the page
            shows(2, 20)
            gate.release()  # epoch 3
            shows(3, 20)
            charts = page.evaluate(detail)
            # the run's charts while it trained: the same plots, sent their whole figure once and then new points
            assert [(c["tag"], c["plots"], c["stats"]["resets"]) for c in charts] == [
                ("detail_loss", 1, 1), ("detail_acc", 1, 1)], charts
            assert all(c["stats"]["extends"] == 2 for c in charts), charts
            gate.release()  # the run finishes
            trainer.join(60)
            assert store.get_run(run.id)["status"] == "finished"
            page.wait_for_function("() => !document.body.innerText.includes('run training')", polling=100,
                                   timeout=20 * MS)
            shows(3)  # the overlay and the opened run, still open (its choice does not hang on its status)
            ended = page.evaluate(detail)
            print(f"\nthe run's charts while it trained, then after it ended: {charts}, {ended}")
            # the same plots after the run ended: the page's "1 run training" line went without moving them
            assert [(c["tag"], c["plots"]) for c in ended] == [("detail_loss", 1), ("detail_acc", 1)], ended
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            gate.release(5)
            browser.close()
    assert "Traceback" not in log.read_text()


def test_history_at_1400_px_shows_status_and_accuracy_reads_log_labels_and_opens_on_mistakes(server, tmp_path):
    """What a tester saw at 1,400 px: status and accuracy off-screen, log labels "1, 9, 8 ... 3", and an
    evaluation grid of correct zeros. The screenshot (history-1400.png) is there to look at."""
    from playwright.sync_api import sync_playwright

    from dashboard.history_page import COLUMNS

    first, second = server["ids"]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60 * MS)
            page.goto(f"http://127.0.0.1:{server['port']}/history")
            table = page.locator("[data-testid='stDataFrame']")
            table.wait_for()
            headers_js = ("() => Array.from(document.querySelectorAll(\"[data-testid='stDataFrame'] "
                          "[role='columnheader']\")).map(e => e.innerText)")
            page.wait_for_function(f"() => ({headers_js})().length > 0", polling=100)
            headers = page.evaluate(headers_js)
            assert headers[:3] == ["status", "test acc", "best val"], headers
            box = table.bounding_box()
            widths = [width for _title, _format, width in COLUMNS.values()]
            row_marker = 36  # the tick-box column
            assert box["x"] + row_marker + sum(widths[:3]) < 1400 - 20 and box["width"] > row_marker + sum(widths[:3])
            page.screenshot(path=str(tmp_path / "history-1400.png"))

            pick(page, "hist_selected", first, multi=True)
            pick(page, "hist_selected", second, multi=True)
            page.locator(".st-key-hist_log label").click()
            labels_js = ("() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => "
                         "Array.from(el.querySelectorAll('.ytick text')).map(t => t.textContent))")
            page.wait_for_function(f"() => ({labels_js})().some(ls => ls.length && ls.every(l => l.includes('.')"
                                   f" || l === '1' || l === '2'))", polling=100)
            loss_labels = [labels for labels in page.evaluate(labels_js) if labels and float(labels[0]) < 10][0]
            values = [float(label) for label in loss_labels]
            assert len(values) >= 3 and values == sorted(values), loss_labels  # 0.4, 0.5, 0.6 ..., never 9, 8, 3

            pick(page, "hist_open", second)
            page.get_by_role("tab", name="Evaluation").click()
            page.locator("[data-testid='stImage'] img").first.wait_for()
            page.locator("[data-testid='stImage']").first.scroll_into_view_if_needed()
            captions = page.evaluate("() => Array.from(document.querySelectorAll(\"[data-testid='stImage']\"))"
                                     ".map(e => e.innerText.trim())")
            assert captions and all(c.startswith("✗") for c in captions), captions  # mistakes, not correct zeros
            page.screenshot(path=str(tmp_path / "history-evaluation-1400.png"))
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()
    assert "Traceback" not in server["log"].read_text()
