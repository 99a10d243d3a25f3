"""How busy other processes kept the machine while something was timed (Linux /proc; None elsewhere).

A timing on a shared machine is only as good as the machine was quiet: on 2 cores, one busy
neighbour (a test suite, a browser redrawing charts) can make a 2-thread leg many times slower, since
its threads wait for each other. A ContentionMeter reads the machine's busy CPU ticks and those of the
processes doing the timed work, and reports the share of all cores that everything else used.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

CONTENDED_SHARE = 0.3  # others' share of all cores above which a timing is flagged as distorted
# (the dashboard's own server and browser take ~15-20 % of 2 cores while a comparison runs; a test suite
# running beside it took ~70 %)


def machine_busy_ticks() -> int | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def process_ticks(pid: int | str = "self") -> int:
    """utime + stime of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def worker_children_ticks() -> int:
    """CPU ticks of this process's training workers (`python -m core.runs.worker` children)."""
    me, total = str(os.getpid()), 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if fields[1] == me and b"core.runs.worker" in (proc / "cmdline").read_bytes():
                total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


class ContentionMeter:
    """meter = ContentionMeter(); ...timed work...; meter.share() -> others' share of all cores (0-1)."""

    def __init__(self, own_ticks: Callable[[], int] = process_ticks):
        self.own_ticks = own_ticks
        self.start = self._read()

    def _read(self) -> tuple[int, int, float] | None:
        busy = machine_busy_ticks()
        if busy is None:
            return None
        return busy, self.own_ticks(), time.monotonic()

    def share(self) -> float | None:
        end = self._read()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        return max(0.0, others / ticks_per_s / (end[2] - self.start[2]) / (os.cpu_count() or 1))


def contention_note(share: float | None, what: str) -> str:
    """'' when the machine was quiet enough, else one sentence saying the timing is distorted."""
    if share is None or share <= CONTENDED_SHARE:
        return ""
    return (f"Other processes kept {share:.0%} of this machine's {os.cpu_count()} cores busy while {what} was timed "
            f"(a dashboard's server and browser count too), so its times are inflated, multi-thread CPU legs most; "
            f"measure again when the machine is quiet.")
