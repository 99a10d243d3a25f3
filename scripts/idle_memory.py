"""Benchmark (not a test): memory held by the dashboard's engine while idle, after 1 run and after N runs.

Starts a RunManager as the dashboard does (worker processes, MNIST preloaded), trains N short runs one
after another with varied models, and prints the resident memory (RSS) of this process plus its worker
processes once each run has ended and the workers have settled.

    DATA_DIR=../shared/datasets python scripts/idle_memory.py --runs 30
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from core.config import RunConfig
from core.runs.manager import RunManager
from core.engine.memory import process_rss


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return children


def tree_rss() -> tuple[int, int, int]:
    """(this process's RSS, its workers' RSS, worker count) in bytes."""
    me = os.getpid()
    workers = child_pids(me)
    return process_rss(me) or 0, sum(process_rss(p) or 0 for p in workers), len(workers)


def settle(seconds: float = 3.0) -> tuple[int, int, int]:
    time.sleep(seconds)  # closing workers exit; a spare finishes loading
    return tree_rss()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp()) / "runs.db"
    manager = RunManager(db_path=db, data_dir=os.environ.get("DATA_DIR"), preload="mnist")
    sizes = [(32,), (128,), (512,), (128, 64), (256, 256)]
    datasets = ["mnist", "mnist", "fashion_mnist"]
    figures = []
    try:
        for i in range(args.runs):
            config = RunConfig(device="cpu", epochs=args.epochs, hidden_sizes=sizes[i % len(sizes)],
                               dataset=datasets[i % len(datasets)], seed=i)
            run_id = manager.start(config)
            snap = manager.wait(run_id, timeout=600)
            if snap.status != "finished":
                print(f"run {i + 1}: {snap.status} {snap.message}", file=sys.stderr)
            if i == 0 or i == args.runs - 1:
                server, workers, count = settle()
                figures.append({"after_runs": i + 1, "server_mib": server / 2**20, "workers_mib": workers / 2**20,
                                "workers": count, "total_mib": (server + workers) / 2**20})
                print(f"after {i + 1:2d} run(s): server {server / 2**20:6.0f} MiB + {count} worker(s) "
                      f"{workers / 2**20:6.0f} MiB = {(server + workers) / 2**20:6.0f} MiB", file=sys.stderr)
    finally:
        manager.shutdown()
    growth = figures[-1]["total_mib"] - figures[0]["total_mib"]
    print(f"idle RSS growth from run 1 to run {args.runs}: {growth:+.0f} MiB", file=sys.stderr)
    print(json.dumps({"runs": args.runs, "figures": figures, "growth_mib": growth}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
