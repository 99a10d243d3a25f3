"""When the Train page's live panel polls: timed to an epoch's end, and waiting on the server for it."""
from __future__ import annotations

import threading
import time

from core.config import RunConfig, RunStatus
from core.engine.train import BatchProgress, EpochResult
from core.runs.manager import RunManager, RunSnapshot, _LiveRun
from dashboard.live_panel import (EPOCH_WAIT_S, MIN_POLL_SECONDS, POLL_SECONDS, epoch_left_seconds, latest_snapshot,
                                  next_poll_seconds)


def epoch(n: int, seconds: float) -> EpochResult:
    return EpochResult(epoch=n, phase=0, lr=0.5, train_loss=0.5, val_loss=0.4, val_acc=0.9, seconds=seconds,
                       samples_per_s=1e5, warmup=n == 1, elapsed=n * seconds, device="cpu")


def running(epoch_seconds: float, done: int, batch: int, batches: int = 100) -> RunSnapshot:
    epochs = tuple(epoch(i + 1, epoch_seconds) for i in range(done))
    progress = BatchProgress(epoch=done + 1, batch=batch, batches=batches, seconds=0.0)
    return RunSnapshot("r1", "", RunConfig(), RunStatus.RUNNING, epochs=epochs, progress=progress, planned_epochs=50)


def test_a_poll_is_timed_just_before_the_epoch_ends_and_never_faster_than_the_floor():
    assert epoch_left_seconds(running(2.0, 3, 50)) == 1.0
    assert next_poll_seconds(running(2.0, 3, 0)) == POLL_SECONDS  # 2 s left: the plain cadence
    assert next_poll_seconds(running(1.0, 3, 20)) == 0.8 - 0.25  # woken 0.25 s before the end, then it waits
    assert next_poll_seconds(running(0.2, 3, 10)) == MIN_POLL_SECONDS  # short epochs: several per draw
    assert next_poll_seconds(running(1.0, 0, 50)) == POLL_SECONDS  # no epoch timed yet: no estimate


def test_a_poll_waits_for_an_epoch_about_to_end_and_not_for_one_far_off():
    calls = []

    def wait_for_epoch(seen, timeout):
        calls.append((seen, timeout))
        return "after the epoch"

    assert latest_snapshot(lambda: running(0.3, 3, 50), wait_for_epoch) == "after the epoch"
    assert calls[0][0] == 3 and 0.15 < calls[0][1] <= EPOCH_WAIT_S
    far = running(5.0, 3, 10)
    assert latest_snapshot(lambda: far, wait_for_epoch) is far and len(calls) == 1
    queued = RunSnapshot("r1", "", RunConfig(), RunStatus.QUEUED)
    assert latest_snapshot(lambda: queued, wait_for_epoch) is queued and len(calls) == 1
    assert latest_snapshot(lambda: None, wait_for_epoch) is None


def test_the_manager_hands_over_an_epoch_the_moment_it_is_recorded(tmp_path):
    manager = RunManager(db_path=tmp_path / "runs.db", data_dir=tmp_path / "none", idle_reap_s=3600)
    try:
        live = manager._live.add(_LiveRun(manager._live, "r1"), running(0.3, 3, 50))
        threading.Timer(0.2, lambda: live.update(epochs=live.snapshot.epochs + (epoch(4, 0.3),))).start()
        started = time.monotonic()
        snap = manager.wait_for_epoch("r1", 3, timeout=5)
        assert len(snap.epochs) == 4 and time.monotonic() - started < 1.5
        assert manager.wait_for_epoch("r1", 4, timeout=0.1).epochs == snap.epochs  # none new: after the timeout
    finally:
        manager.shutdown()
