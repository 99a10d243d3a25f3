"""The Train page's system strip (dashboard/system_strip.py) under AppTest: drawn from snapshots made here, and once
on the real page while a real run trains (slow lane)."""
from __future__ import annotations

import time

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.config import RunConfig, RunStatus
from core.runs.manager import RunSnapshot
from core.runs.telemetry import CPU_RUN_NOTE, NO_GPU, TelemetrySample
from dashboard.system_strip import core_bars, cpu_text, runtime_text

from test_dashboard_app import SLOW, check_ok, manager, new_app, poll, start  # noqa: F401


def strip_script():
    import streamlit as st

    from dashboard.system_strip import draw_runtime, draw_system_strip

    draw_system_strip(st.session_state.snap)
    draw_runtime(st.session_state.snap)


def draw(snap: RunSnapshot) -> AppTest:
    at = AppTest.from_function(strip_script, default_timeout=30)
    at.session_state["snap"] = snap
    at.run()
    check_ok(at)
    return at


def snapshot(status=RunStatus.RUNNING, sampled=True, **sample) -> RunSnapshot:
    fields = dict(at=time.time(), seconds=1.0, rss_bytes=512 * 2**20, process_cpu_percent=98.0,
                  cpu_percent=(87.0, 12.0), gpu_note=CPU_RUN_NOTE)
    fields.update(sample)
    return RunSnapshot("r1", "", RunConfig(device="cpu"), status, cpu_threads=1,
                       telemetry=TelemetrySample(**fields) if sampled else None)


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_a_cpu_run_shows_each_core_the_process_and_no_gpu_quietly():
    at = draw(snapshot())
    text = captions(at)
    assert text[0] == "CPU per core `▇▁` 87 % · 12 %"
    assert text[1] == "Training process: 98 % CPU · 512 MiB"
    assert text[2] == "no GPU in use \\(the run trains on the CPU\\)"  # md()-escaped: shown as plain text
    assert not at.warning and not at.error
    assert text[3] == runtime_text(snapshot())


def test_a_cuda_run_shows_the_gpus_use_and_memory():
    at = draw(snapshot(gpu_percent=63.0, gpu_memory_used=3 * 2**30, gpu_memory_total=80 * 2**30, gpu_note=""))
    assert captions(at)[2] == "GPU 63 % · 3.0 of 80.0 GiB"


def test_no_gpu_telemetry_is_a_caption_with_the_reason_not_an_error():
    at = draw(snapshot(gpu_note=f"{NO_GPU}: NVML Shared Library Not Found"))
    assert captions(at)[2].startswith("no GPU telemetry: NVML Shared Library Not Found".replace(":", "\\:"))
    assert not at.warning and not at.error and not at.exception


def test_many_cores_get_a_bar_each_and_a_mean_and_the_busiest():
    cores = tuple(float(p) for p in (0, 10, 20, 30, 40, 50, 60, 100))
    assert core_bars(cores) == "▁▁▂▃▄▅▅█"
    text = cpu_text(TelemetrySample(0.0, 1.0, None, None, cores))
    assert text == "CPU per core `▁▁▂▃▄▅▅█` 8 cores, mean 39 %, busiest 100 %"


def test_before_the_first_sample_and_with_an_old_one_the_strip_waits():
    for snap in (snapshot(sampled=False), snapshot(at=time.time() - 60)):
        at = draw(snap)
        assert captions(at)[0] == "System: waiting for the training process's first reading"


def test_a_queued_or_ended_run_has_no_strip_but_keeps_the_runtime_line():
    for status in (RunStatus.QUEUED, RunStatus.FINISHED):
        at = draw(snapshot(status))
        assert captions(at) == [runtime_text(snapshot(status))]


def test_the_runtime_line_names_torch_cuda_and_the_threads():
    line = runtime_text(snapshot())
    assert line.startswith(f"torch {torch.__version__} · ")
    assert (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build (no CUDA)") in line
    assert line.endswith("1 CPU thread(s) for training")


# -- the real page, a real run (slow lane) -----------------------------------------------------------------------
@pytest.mark.slow
def test_the_train_page_shows_the_strip_while_a_run_trains(manager):  # noqa: F811
    at = new_app()
    rid = start(at, SLOW)

    def strip_shown(at):
        return any(c.value.startswith("CPU per core") for c in at.caption)

    at = poll(at, strip_shown, 90, "the system strip")
    text = captions(at)
    assert any(c.startswith("Training process: ") and "MiB" in c for c in text), text
    snap = manager.snapshot(rid)
    assert snap.telemetry is not None and snap.telemetry.rss_bytes > 50 * 2**20
    assert any(c.startswith(f"torch {torch.__version__}") for c in text), text
    manager.stop(rid)
