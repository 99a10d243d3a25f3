"""The live feed (dashboard/live_view.py's delta, dashboard/live_feed.py's route): what a page drawn at a cursor lacks,
when it must redraw instead, and the route answering over HTTP from the pages' RunManager."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from urllib.parse import urlencode

from starlette.applications import Starlette

from core.config import RunConfig, RunStatus
from core.engine.train import BatchProgress, EpochResult
from core.runs.manager import RunSnapshot
from dashboard import charts, live_feed, live_view


def epoch(n: int, val_acc: float = 0.9) -> EpochResult:
    return EpochResult(epoch=n, phase=0, lr=0.5, train_loss=0.5 / n, val_loss=0.4 / n, val_acc=val_acc, seconds=0.2,
                       samples_per_s=2.4e5, warmup=n == 1, elapsed=n * 0.2, device="cpu")


def running(done: int, batches: int = 0, **changes) -> RunSnapshot:
    points = tuple((i / 4, 1.0 / (i + 1)) for i in range(batches))
    snap = RunSnapshot("r1", "", RunConfig(), RunStatus.RUNNING, epochs=tuple(epoch(i + 1) for i in range(done)),
                       progress=BatchProgress(epoch=done + 1, batch=10, batches=480, seconds=0.01),
                       batch_losses=points, planned_epochs=50)
    return dataclasses.replace(snap, **changes)


def page_at(snap: RunSnapshot) -> tuple[dict, str]:
    return live_view.cursor(snap), live_view.panel_shape(snap)


def test_a_page_gets_only_the_points_it_lacks_at_their_positions():
    cursor, shape = page_at(running(3, batches=9))
    later = running(5, batches=14)
    assert live_view.panel_shape(later) == shape  # more of the same: no redraw
    d = live_view.delta(later, cursor, shape)
    assert not d["rerun"] and d["cursor"] == live_view.cursor(later)
    loss, acc = d["charts"]["live_loss"], d["charts"]["live_acc"]
    assert loss["at"] == {"0": 9, "1": 3, "2": 3} and acc["at"] == {"0": 3}
    whole = charts.loss_points(later.epochs, later.batch_losses)
    assert loss["extend"]["0"] == {"x": whole[0][0][9:], "y": whole[0][1][9:]}
    assert loss["extend"]["2"]["y"] == [e.val_loss for e in later.epochs[3:]]
    assert acc["extend"]["0"]["y"] == [e.val_acc * 100 for e in later.epochs[3:]]
    # the text in place: the progress bar's and the tiles'
    assert d["progress"]["text"] == [live_view.progress_view(later)[1]]
    assert [t["value"][0] for t in d["tiles"]] == [v for v, _ in live_view.tile_values(later)]


def test_nothing_new_sends_no_points():
    snap = running(3, batches=9)
    d = live_view.delta(snap, *page_at(snap))
    assert d["charts"] == {} and not d["rerun"]


def test_another_shape_asks_for_a_redraw_and_still_brings_the_points():
    cursor, shape = page_at(running(1, batches=4))  # one epoch: no delta under the accuracy tile yet
    d = live_view.delta(running(2, batches=8), cursor, shape)
    assert d["rerun"] and d["charts"]["live_acc"]["at"] == {"0": 1}
    warned = running(2, batches=8, message="resumed")
    assert live_view.delta(warned, *page_at(running(2, batches=8)))["rerun"]


def test_an_ended_run_a_halved_curve_or_a_gone_run_need_the_redraw():
    snap = running(3, batches=9)
    cursor, shape = page_at(snap)
    ended = live_view.delta(dataclasses.replace(snap, status=RunStatus.FINISHED), cursor, shape)
    assert ended["rerun"] and not ended["active"]
    halved = dataclasses.replace(snap, batch_losses=snap.batch_losses[::2])
    assert live_view.delta(halved, cursor, shape) == {"rerun": True, "active": True}
    assert live_view.delta(None, cursor, shape) == {"rerun": True, "active": False}


def test_text_nodes_follow_the_markdown_streamlit_renders():
    assert live_view.text_nodes("CPU per core `▇▁` 87 % · 12 %") == ["CPU per core ", "▇▁", " 87 % · 12 %"]
    assert live_view.text_nodes("no GPU in use \\(the run trains on the CPU\\)") == [
        "no GPU in use (the run trains on the CPU)"]


class FakeManager:
    def __init__(self, snap: RunSnapshot | None):
        self.snap, self.waits = snap, []

    def snapshot(self, run_id):
        return self.snap if self.snap is not None and run_id == self.snap.run_id else None

    def wait_for_epoch(self, run_id, seen, timeout):
        self.waits.append((seen, timeout))
        return self.snapshot(run_id)


class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status_code, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class Client:
    """Requests straight into the ASGI app (starlette's TestClient needs a package this project does not install)."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, params: dict | None = None) -> Response:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": urlencode(params or {}).encode(),
                 "headers": [], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return Response(start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:]))

    def get(self, path: str, params: dict | None = None) -> Response:
        return self.request("GET", path, params)

    def post(self, path: str) -> Response:
        return self.request("POST", path)


def client(monkeypatch, manager) -> Client:
    monkeypatch.setattr("dashboard.state.get_manager", lambda: manager)
    return Client(Starlette(routes=live_feed.routes()))


def test_the_route_answers_with_the_delta_after_waiting_for_the_next_epoch(monkeypatch):
    snap = running(5, batches=14)
    manager = FakeManager(snap)
    cursor, shape = page_at(running(3, batches=9))
    response = client(monkeypatch, manager).get(
        "/live/runs/r1", params={"e": cursor["e"], "b": cursor["b"], "bx": cursor["bx"], "shape": shape})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert response.json() == live_view.delta(snap, cursor, shape)
    assert manager.waits == [(5, live_feed.WAIT_S)]  # the next epoch to end, not one the page lacks already


def test_the_route_does_not_wait_when_a_redraw_is_due_and_refuses_bad_input(monkeypatch):
    manager = FakeManager(running(2))
    http = client(monkeypatch, manager)
    start = time.monotonic()
    assert http.get("/live/runs/r1", params={"shape": "old"}).json()["rerun"] is True
    assert manager.waits == [] and time.monotonic() - start < 2
    assert http.get("/live/runs/unknown").json() == {"rerun": True, "active": False}
    assert http.get("/live/runs/r1", params={"e": "x"}).status_code == 400
    assert http.get("/live/runs/a.b").status_code == 400
    assert http.post("/live/runs/r1").status_code == 405  # read-only
