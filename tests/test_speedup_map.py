"""Speedup map: the grid, complete cells, cancelling, the CLI, storing and reloading, the dashboard's job runner."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from core.studies.legs import Leg
from core.config import ConfigError, RunConfig, RunStatus
from core.runs.manager import RunManager
from core.studies.map_jobs import MapJobs
from core.studies.speedup_map import (ESTIMATE_CONFIRM_S, MapGrid, default_map_legs, estimate_seconds, run_speedup_map,
                                      step_flops)
from core.runs.store import Store
from support import wait_for as wait_until

# real worker processes, subprocesses or servers: the slow lane (pytest -m 'not slow and not browser' skips it)
pytestmark = pytest.mark.slow

TINY = MapGrid(hidden_sizes=(8, 32), layers=(1, 2), batch_sizes=(16, 64), steps=3, warmup_steps=1)
LEGS = [Leg("cpu", 1), Leg("cpu", 2)]


def test_grid_cells_and_validation():
    assert len(MapGrid().cells()) == 4 * 2 * 3
    assert TINY.cells()[0] == (1, 8, 16) and TINY.cells()[-1] == (2, 32, 64)
    assert MapGrid(hidden_sizes=[64, 32, 64]).hidden_sizes == (32, 64)  # sorted, no repeats
    assert MapGrid.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    for bad in (dict(hidden_sizes=()), dict(layers=(0,)), dict(batch_sizes=(70000,)), dict(steps=0),
                dict(hidden_sizes=(1.5,)), dict(warmup_steps=0)):
        with pytest.raises(ConfigError):
            MapGrid(**bad)


def test_default_map_legs_put_the_baseline_first():
    from core.engine.devices import DeviceInfo

    cpu, cuda = DeviceInfo("cpu", True, "CPU"), DeviceInfo("cuda", True, "CUDA")
    assert [leg.device for leg in default_map_legs([cpu, cuda])] == ["cpu", "cuda"]
    legs = default_map_legs([cpu, DeviceInfo("cuda", False, "CUDA", "none")])
    assert legs[0] == Leg("cpu", 1) and legs[1].device == "cpu"


def test_step_flops_counts_forward_and_backward_matmuls():
    assert step_flops(784, (32,), 10, 100) == 6 * (784 * 32 + 32 * 10) * 100


def test_estimate_follows_the_flops_and_flags_the_big_grids():
    """Issue 8 item 18: `--hidden-sizes 5000` ran 7 minutes with no warning; the estimate sees it coming."""
    rates = [150e9, 300e9]  # FLOP/s: 1 and 2 threads of this project's 2-core machine
    default = estimate_seconds(MapGrid(), rates, 784, 10)
    wide = estimate_seconds(MapGrid(hidden_sizes=(5000,)), rates, 784, 10)
    assert default < ESTIMATE_CONFIRM_S < wide
    # the FLOP-bound part scales with the steps, and with the matmul rate
    big = MapGrid(hidden_sizes=(2048,), layers=(3,), batch_sizes=(1024,), steps=40, warmup_steps=5)
    more = MapGrid(hidden_sizes=(2048,), layers=(3,), batch_sizes=(1024,), steps=85, warmup_steps=5)
    step_s = step_flops(784, (2048,) * 3, 10, 1024) / 150e9
    assert estimate_seconds(more, [150e9], 784, 10) - estimate_seconds(big, [150e9], 784, 10) == \
        pytest.approx(45 * step_s, rel=0.05)
    assert estimate_seconds(big, [300e9], 784, 10) < estimate_seconds(big, [150e9], 784, 10)
    # a leg without a known rate (a GPU not measured yet) adds its per-step overhead only
    unknown = estimate_seconds(big, [150e9, None], 784, 10)
    assert unknown == pytest.approx(estimate_seconds(big, [150e9, 1e30], 784, 10))
    assert unknown > estimate_seconds(big, [150e9], 784, 10)


def test_cli_refuses_a_long_map_without_a_terminal_or_yes(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "data").mkdir()
    env = {**__import__("os").environ, "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-m", "core", "speedup-map", "--no-db", "--hidden-sizes", "4096",
                             "--layers", "4", "--batch-sizes", "8192", "--steps", "1000"],
                            cwd=Path(__file__).resolve().parent.parent, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "estimate: about" in result.stderr and "pass --yes" in result.stderr
    assert result.stdout == ""  # not a single cell measured


def test_every_cell_is_complete_with_every_leg(small_sample):
    seen = []
    result = run_speedup_map(TINY, LEGS, small_sample, on_cell=lambda cell, done, total: seen.append((done, total)),
                             gemm_seconds=0.05)
    assert result["status"] == RunStatus.FINISHED and result["total_cells"] == 8
    assert result["other_cpu_share"] is None or result["other_cpu_share"] >= 0
    assert seen == [(i, 8) for i in range(1, 9)]
    assert [(c["layers"], c["hidden"], c["batch"]) for c in result["cells"]] == TINY.cells()
    assert [leg["spec"] for leg in result["legs"]] == ["device=cpu,threads=1", "device=cpu,threads=2"]
    assert all(leg["gemm_gflops"] > 0 for leg in result["legs"])
    for cell in result["cells"]:
        assert len(cell["legs"]) == 2 and cell["speedup"][0] == 1.0
        for timing in cell["legs"]:
            assert timing["seconds"] > 0 and timing["floor_s"] > 0
            assert timing["samples_per_s"] == pytest.approx(3 * cell["batch"] / timing["seconds"])
            assert timing["floor_ratio"] == pytest.approx(timing["seconds"] / timing["floor_s"])
        assert cell["speedup"][1] == pytest.approx(cell["legs"][0]["seconds"] / cell["legs"][1]["seconds"])
    assert torch.get_num_threads() == torch.get_num_threads()  # thread setting restored (no exception above)
    json.dumps(result)


def test_threads_are_restored_after_the_map(small_sample):
    before = torch.get_num_threads()
    run_speedup_map(MapGrid(hidden_sizes=(8,), layers=(1,), batch_sizes=(8,), steps=1, warmup_steps=1),
                    [Leg("cpu", 1), Leg("cpu", 2)], small_sample, gemm_seconds=0.01)
    assert torch.get_num_threads() == before


def test_cancel_between_cells_keeps_only_complete_cells(small_sample):
    cancel = threading.Event()

    def on_cell(cell, done, total):
        if done == 2:
            cancel.set()

    result = run_speedup_map(TINY, LEGS, small_sample, cancel=cancel, on_cell=on_cell, gemm_seconds=0.05)
    assert result["status"] == RunStatus.CANCELLED and len(result["cells"]) == 2
    assert all(len(cell["legs"]) == 2 for cell in result["cells"])


def test_cancel_mid_cell_stops_within_a_step(small_sample):
    grid = MapGrid(hidden_sizes=(256,), layers=(1,), batch_sizes=(512,), steps=10000, warmup_steps=1)
    cancel = threading.Event()
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    start = time.perf_counter()
    result = run_speedup_map(grid, [Leg("cpu", 1)], small_sample, cancel=cancel, gemm_seconds=0.05)
    assert time.perf_counter() - start < 10
    assert result["status"] == RunStatus.CANCELLED and result["cells"] == []


def test_dataloader_legs_are_refused(small_sample):
    with pytest.raises(ConfigError, match="resident"):
        run_speedup_map(TINY, [Leg("cpu", 1, "dataloader")], small_sample)


# -- the CLI and the store --------------------------------------------------------------------------
def test_cli_prints_cells_then_the_grid_and_stores_it(tmp_path, capsys, monkeypatch):
    import signal

    from core.cli import main

    (tmp_path / "data").mkdir()  # a named data folder must exist (core.engine.data never creates one)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))  # empty: the 5,000-digit sample
    db = tmp_path / "maps.db"
    previous = signal.getsignal(signal.SIGTERM)  # the command installs its own SIGTERM handler
    try:
        code = main(["speedup-map", "--hidden-sizes", "8,16", "--layers", "1", "--batch-sizes", "32", "--steps", "2",
                     "--warmup-steps", "1", "--leg", "device=cpu,threads=1", "--leg", "device=cpu,threads=2",
                     "--db", str(db)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    out, err = capsys.readouterr()
    assert code == 0
    assert "estimate: about" in err and "2 cells x 2 legs" in err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [line["type"] for line in lines] == ["cell", "cell", "speedup_map"]
    grid = lines[-1]
    assert grid["status"] == "finished" and [c["hidden"] for c in grid["cells"]] == [8, 16]
    assert grid["grid"]["batch_sizes"] == [32]
    store = Store(db)
    assert store.reports("speedup_map")[0]["id"] == grid["id"]
    assert store.report(grid["id"], "speedup_map")["cells"] == grid["cells"]


def test_cli_bad_grid_exits_2(capsys):
    from core.cli import main

    assert main(["speedup-map", "--no-db", "--hidden-sizes", "32,abc"]) == 2
    assert "hidden-sizes" in capsys.readouterr().err


# -- the dashboard's runner: a job in a training worker, in the RunManager's queues, cancellable, stored ---------
@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    root = tmp_path_factory.mktemp("map-jobs")
    (root / "data").mkdir()  # empty: the 5,000-digit sample
    manager = RunManager(db_path=root / "runs.db", data_dir=str(root / "data"), cpu_threads=1, preload="mnist")
    yield manager
    manager.shutdown()


@pytest.fixture
def jobs(manager):
    registry = MapJobs(manager)
    yield registry
    registry.shutdown()




def wait_for(predicate, timeout=120.0):
    return wait_until(predicate, timeout)


def test_map_job_runs_in_a_training_worker_and_is_reloadable(jobs):
    grid = MapGrid(hidden_sizes=(8,), layers=(1,), batch_sizes=(16, 32), steps=2, warmup_steps=1)
    map_id = jobs.start(grid, LEGS)
    snap = jobs.wait(map_id, 120)
    assert snap.status == RunStatus.FINISHED, snap.message
    assert len(snap.cells) == 2 and snap.result["id"] == map_id
    assert [leg["spec"] for leg in snap.leg_info] == [leg.spec() for leg in LEGS]
    stored = MapJobs(jobs.manager).snapshot(map_id)  # a fresh registry, as after a server restart
    assert stored is not None and stored.status == RunStatus.FINISHED and stored.cells == snap.cells
    assert jobs.recent()[0]["id"] == map_id
    # the time estimate reuses the rates the map measured, here and in a fresh registry (from the store)
    measured = [leg["gemm_gflops"] * 1e9 for leg in snap.leg_info]
    assert jobs.gemm_rates(LEGS) == measured and MapJobs(jobs.manager).gemm_rates(LEGS) == measured
    assert MapJobs(jobs.manager).estimate(grid, LEGS) > 0
    assert len(jobs.manager.idle_workers()) == 1  # the map's worker stays warm for the next run or map


def test_an_unknown_leg_rate_is_measured_only_when_asked(tmp_path):
    jobs = MapJobs(SimpleNamespace(store=Store(tmp_path / "runs.db")))  # no maps stored: no rate known
    leg = [Leg("cpu", 1)]
    assert jobs.gemm_rates(leg) == [None] and jobs.estimate(TINY, leg) is None
    assert jobs.gemm_rates(leg, measure=True)[0] > 1e8  # FLOP/s
    assert torch.get_num_threads() == 1  # put back
    assert jobs.estimate(TINY, leg) > 0  # remembered


def test_map_job_cancel_keeps_finished_cells(jobs):
    grid = MapGrid(hidden_sizes=(8, 16, 1024), layers=(1,), batch_sizes=(2048,), steps=500, warmup_steps=1)
    map_id = jobs.start(grid, [Leg("cpu", 1)])
    deadline = time.monotonic() + 120
    while not jobs.snapshot(map_id).cells and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jobs.snapshot(map_id).cells, jobs.snapshot(map_id).message
    with pytest.raises(RuntimeError, match="already"):
        jobs.start(grid, [Leg("cpu", 1)])  # one map at a time
    jobs.cancel(map_id)
    snap = jobs.wait(map_id, 60)
    assert snap.status == RunStatus.CANCELLED
    assert 1 <= len(snap.cells) < 3 and all(len(c["legs"]) == 1 for c in snap.cells)
    assert MapJobs(jobs.manager).snapshot(map_id).status == RunStatus.CANCELLED  # stored as far as it got


def test_a_map_waits_for_a_run_queued_before_it_and_can_be_cancelled_then(jobs):
    run_id = jobs.manager.start(RunConfig(device="cpu", epochs=200), owner="train-page")
    try:
        map_id = jobs.start(TINY, LEGS)
        snap = wait_for(lambda: (s := jobs.snapshot(map_id)).message and s)
        assert snap.status == RunStatus.WAITING and "waiting for the 1 run ahead of it" in snap.message
        jobs.cancel(map_id)
        snap = jobs.wait(map_id, 10)
        assert snap.status == RunStatus.CANCELLED and snap.message == "cancelled before it started"
        assert jobs.manager.snapshot(run_id).active  # the run trained on, untouched
    finally:
        jobs.manager.stop(run_id)
        jobs.manager.wait(run_id, 60)


def test_a_run_asked_for_during_a_map_waits_for_it_in_the_same_queue(jobs):
    grid = MapGrid(hidden_sizes=(8, 16, 1024), layers=(1,), batch_sizes=(2048,), steps=500, warmup_steps=1)
    map_id = jobs.start(grid, [Leg("cpu", 1)])
    assert wait_for(lambda: jobs.snapshot(map_id).status == RunStatus.RUNNING), jobs.snapshot(map_id).message
    run_id = jobs.manager.start(RunConfig(device="cpu", epochs=1), owner="train-page")
    time.sleep(1.0)
    run = jobs.manager.snapshot(run_id)
    assert run.status == RunStatus.QUEUED and run.queue_ahead == 1  # the map holds the CPU
    assert jobs.snapshot(map_id).status == RunStatus.RUNNING
    jobs.cancel(map_id)
    assert jobs.wait(map_id, 60).status == RunStatus.CANCELLED
    assert jobs.manager.wait(run_id, 120).status == RunStatus.FINISHED  # its turn came once the map let go


def test_a_map_whose_worker_is_killed_fails_saying_how(jobs):
    grid = MapGrid(hidden_sizes=(8, 16, 1024), layers=(1,), batch_sizes=(2048,), steps=500, warmup_steps=1)
    map_id = jobs.start(grid, [Leg("cpu", 1)])
    assert wait_for(lambda: jobs._live.entry(map_id).worker is not None)
    os.kill(jobs._live.entry(map_id).worker.process.pid, signal.SIGKILL)
    snap = jobs.wait(map_id, 30)
    assert snap.status == RunStatus.FAILED and "the map failed: the training process was killed by SIGKILL" in \
        snap.message, snap.message
    run_id = jobs.manager.start(RunConfig(device="cpu", epochs=1))  # the queue is free again
    assert jobs.manager.wait(run_id, 120).status == RunStatus.FINISHED


# -- contention: how busy other processes kept the machine ------------------------------------------
def test_contention_meter_sees_another_busy_process():
    import subprocess
    import sys

    from core.studies.cpuload import ContentionMeter

    meter = ContentionMeter()
    if meter.start is None:
        pytest.skip("no /proc here")
    spin = subprocess.run([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"],
                          timeout=30)
    assert spin.returncode == 0
    share = meter.share()
    # one core busy for (most of) the window; other load can only add to it
    assert share >= 0.6 / (os.cpu_count() or 1)


def test_contention_notes_flag_only_busy_machines():
    from core.studies.compare import LegRun, summarize
    from core.studies.cpuload import CONTENDED_SHARE, contention_note

    assert contention_note(None, "x") == "" and contention_note(CONTENDED_SHARE, "x") == ""
    assert "40%" in contention_note(0.4, "this map")
    summary = summarize([LegRun(Leg("cpu", 1), "finished", other_cpu_share=0.05),
                         LegRun(Leg("cpu", 2), "finished", other_cpu_share=0.5)])
    assert "leg 2 (CPU · 2 threads · resident)" in summary.contention_text
    assert "leg 1" not in summary.contention_text
