"""The live registry (core.runs.live) behind the RunManager, comparisons and map jobs."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from core.runs.live import Entry, LiveRegistry


@dataclass(frozen=True)
class Snap:
    status: str = "running"
    n: int = 0

    @property
    def active(self) -> bool:
        return self.status == "running"


def test_update_replaces_the_snapshot_and_never_changes_one_already_read():
    live = LiveRegistry()
    entry = live.add(Entry(live, "a"), Snap())
    before = entry.snapshot
    assert entry.update(n=1) == Snap(n=1) == live.get("a")
    assert before == Snap() and "a" in live and live.get("b") is None and live.entry("a") is entry
    with pytest.raises(TypeError):
        live.update("a", nope=1)  # dataclasses.replace refuses an unknown field: no half-made snapshot
    assert live.get("a") == Snap(n=1)


def test_active_lists_unended_entries_in_the_order_added():
    live = LiveRegistry()
    for key, status in (("a", "running"), ("b", "finished"), ("c", "running")):
        live.add(Entry(live, key), Snap(status))
    assert live.active() == [Snap(), Snap()] and live.is_active("c") and not live.is_active("b")
    assert not live.is_active("nope") and [e.key for e in live.entries()] == ["a", "b", "c"]


def test_wait_returns_once_the_entry_ended_and_its_driver_finished():
    live = LiveRegistry()
    entry = live.add(Entry(live, "a"), Snap())
    after_end = threading.Event()

    def drive():
        time.sleep(0.2)
        entry.update(status="finished")
        time.sleep(0.2)  # bookkeeping after the last change: wait() covers it
        after_end.set()

    live.drive("a", drive, name="test-driver")
    assert live.driving("a")
    assert live.wait("a", 10) == Snap("finished") and after_end.is_set() and not live.driving("a")


def test_wait_times_out_and_never_hangs_on_an_unknown_id_or_a_driver_that_died():
    live = LiveRegistry()
    live.add(Entry(live, "a"), Snap())
    start = time.monotonic()
    assert live.wait("a", 0.3) == Snap() and 0.25 < time.monotonic() - start < 2
    assert live.wait("nope") is None
    live.drive("a", lambda: None, name="test-driver")  # ends without saying so
    assert live.wait("a", 10) == Snap()
    live.join_all(1)


def test_the_per_batch_curve_stays_bounded_and_keeps_its_start_and_newest_point():
    from core.engine.train import BatchProgress
    from core.runs.manager import BATCH_LOSS_POINTS, with_batch_loss

    points: tuple = ()
    records = 3 * BATCH_LOSS_POINTS
    for i in range(records):
        points = with_batch_loss(points, BatchProgress(1 + i // 100, i % 100 + 1, 100, 0.0, 1.0 / (i + 1)))
        assert len(points) <= BATCH_LOSS_POINTS
    assert with_batch_loss(points, BatchProgress(1, 100, 100, 0.0, None)) is points  # a record with no new batch
    assert BATCH_LOSS_POINTS // 2 <= len(points)
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and xs[0] == 0.01 and xs[-1] == records / 100  # in order, first and newest kept


def test_wait_until_returns_the_moment_the_change_comes_and_gives_up_after_its_timeout():
    live = LiveRegistry()
    entry = live.add(Entry(live, "a"), Snap())
    threading.Timer(0.15, lambda: entry.update(n=1)).start()
    threading.Timer(0.3, lambda: entry.update(n=2)).start()
    started = time.monotonic()
    assert live.wait_until("a", lambda s: s.n >= 2, timeout=5) == Snap(n=2)
    assert 0.25 < time.monotonic() - started < 2
    started = time.monotonic()
    assert live.wait_until("a", lambda s: s.n >= 3, timeout=0.2) == Snap(n=2)  # timed out: the snapshot as it is
    assert 0.15 < time.monotonic() - started < 1


def test_wait_until_returns_at_once_for_an_ended_entry_or_an_unknown_id():
    live = LiveRegistry()
    live.add(Entry(live, "a"), Snap("finished"))
    started = time.monotonic()
    assert live.wait_until("a", lambda s: False, timeout=5) == Snap("finished")
    assert live.wait_until("nope", lambda s: False, timeout=5) is None
    assert time.monotonic() - started < 0.5
