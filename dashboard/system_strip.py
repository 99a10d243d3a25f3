"""The Train page's system strip: what the machine does while a run trains, from the latest telemetry sample its
worker sent (core.runs.telemetry, about one a second), and the runtime line of the model expander.

Text only, three captions in one row: a chart per core would cost the browser far more than the numbers are worth,
and the page shares two cores with the training it shows.
"""
from __future__ import annotations

import time

import streamlit as st
import torch

from core.config import RunStatus
from core.runs.manager import RunSnapshot
from core.runs.telemetry import TelemetrySample

from .text import md

BARS = "▁▂▃▄▅▆▇█"  # one glyph per core: 0-12 %, ..., 88-100 %
LISTED_CORES = 4  # up to this many cores each get their number; more get the mean and the busiest
STALE_S = 5.0  # a sample older than this is from before (a continued run's last phase): not shown as current


def core_bars(per_core: tuple[float, ...]) -> str:
    return "".join(BARS[min(len(BARS) - 1, max(0, int(p / 100 * len(BARS))))] for p in per_core)


def cpu_text(sample: TelemetrySample) -> str:
    cores = sample.cpu_percent
    if not cores:
        return "CPU: unknown"
    if len(cores) <= LISTED_CORES:
        numbers = " · ".join(f"{p:.0f} %" for p in cores)
    else:
        numbers = f"{len(cores)} cores, mean {sum(cores) / len(cores):.0f} %, busiest {max(cores):.0f} %"
    return f"CPU per core `{core_bars(cores)}` {numbers}"


def process_text(sample: TelemetrySample) -> str:
    parts = []
    if sample.process_cpu_percent is not None:
        parts.append(f"{sample.process_cpu_percent:.0f} % CPU")
    if sample.rss_bytes is not None:
        parts.append(f"{sample.rss_bytes / 2**20:,.0f} MiB")
    return "Training process: " + (" · ".join(parts) if parts else "unknown")


def gpu_text(sample: TelemetrySample) -> str:
    if sample.gpu_percent is None:
        return md(sample.gpu_note or "no GPU telemetry")
    memory = ""
    if sample.gpu_memory_used is not None and sample.gpu_memory_total:
        memory = f" · {sample.gpu_memory_used / 2**30:.1f} of {sample.gpu_memory_total / 2**30:.1f} GiB"
    return f"GPU {sample.gpu_percent:.0f} %{memory}"


def draw_system_strip(snap: RunSnapshot) -> None:
    """While the run trains: each core's load, the training process's CPU and memory, the GPU's or why not."""
    if not snap.active or snap.status == RunStatus.QUEUED:
        return
    sample = snap.telemetry
    with st.container(key="system_strip"):
        if sample is None or time.time() - sample.at > STALE_S:
            st.caption("System: waiting for the training process's first reading")
            return
        cols = st.columns([3, 2, 3])
        cols[0].caption(cpu_text(sample), help="Every process on each core, over the last second: 100 % = busy.")
        cols[1].caption(process_text(sample), help="The worker process that trains this run: CPU over the last "
                                                   "second (100 % = one core busy) and resident memory.")
        cols[2].caption(gpu_text(sample), help="The whole GPU (every process on it), from NVML." if
                        sample.gpu_percent is not None else None)


def runtime_text(snap: RunSnapshot) -> str:
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build (no CUDA)"
    threads = f" · {snap.cpu_threads} CPU thread(s) for training" if snap.cpu_threads else ""
    return f"torch {torch.__version__} · {cuda}{threads}"


def draw_runtime(snap: RunSnapshot) -> None:
    """The model expander's runtime line: torch and CUDA versions, the training's CPU threads."""
    st.caption(runtime_text(snap))
