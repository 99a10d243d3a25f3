"""Benchmark (not a test): issue 13's bar for sweeps on full MNIST, with the local executor or Ray Tune's.

A 16-trial TPE sweep with median pruning over the default space, 4 epochs per trial, through a RunManager and
its worker processes as the dashboard and `python -m core sweep` run it. Prints the wall time (bar < 240 s), the
best validation accuracy (bar >= 97.5 %), the share of trials pruned (bar >= 1/4), the per-trial overhead
(dispatch + setup + test + weights, excluding epochs; bar < 0.5 s) and how many worker processes were started
(1: every trial took the warm worker of the trial before it).

With `--executor ray` the same sweep runs on Ray Tune (RAY_ADDRESS's cluster, else a local Ray started here and
timed as ray_start_s): the per-trial overhead is the first trial's (a Ray worker starts, imports torch, reads the
data) and the later ones' (Tune reuses that worker) apart.

    DATA_DIR=../shared/datasets python scripts/sweep_bench.py [--trials 16] [--epochs 4] [--seed 0]
    DATA_DIR=../shared/datasets python scripts/sweep_bench.py --trials 4 --executor ray
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from core.config import RunConfig
from core.runs.manager import RunManager
from core.studies.sweep import EXECUTORS, Sweeps, SweepSpec
from core.studies.sweep_space import DEFAULT_SPACE, parse_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default=DEFAULT_SPACE)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR"))
    parser.add_argument("--executor", choices=EXECUTORS, default="local")
    parser.add_argument("--parallel", type=int, default=1)
    args = parser.parse_args()
    spec = SweepSpec(parse_space(args.space), trials=args.trials, epochs=args.epochs, sampler=args.sampler,
                     pruner=args.pruner, seed=args.seed, base=RunConfig(device="cpu"), executor=args.executor,
                     parallel=args.parallel)
    ray_start = None
    if args.executor == "ray":
        from core.studies.sweep_ray import connect, disconnect

        began = time.monotonic()
        connect()
        ray_start = time.monotonic() - began
    with tempfile.TemporaryDirectory() as tmp:
        manager = RunManager(db_path=Path(tmp) / "runs.db", data_dir=args.data_dir, preload="mnist")
        started_workers = []
        new_worker = manager._new_worker  # counted, to show that trials reuse the warm worker

        def counting_new_worker():
            started_workers.append(time.monotonic())
            return new_worker()

        manager._new_worker = counting_new_worker
        try:
            sweeps = Sweeps(manager)
            began = time.monotonic()
            sweep_id = sweeps.start(spec)
            snap = sweeps.wait(sweep_id)
            wall = time.monotonic() - began
            runs = manager.store.sweep_runs(sweep_id)
        finally:
            manager.shutdown()
            if args.executor == "ray":
                disconnect()
    for trial in snap.trials:
        print(json.dumps(trial.result()), flush=True)
    summary = snap.summary()
    overheads = snap.overheads()
    pruned = summary["counts"].get("pruned", 0) / max(1, len(snap.trials))
    by_start = [t.overhead_s for t in sorted(snap.trials, key=lambda t: t.started_at) if t.overhead_s is not None]
    figures = {
        "executor": args.executor, "wall_s": round(wall, 1), "startup_s": round(snap.startup_s, 2),
        "ray_start_s": round(ray_start, 2) if ray_start is not None else None,
        "trials": len(snap.trials), "counts": summary["counts"], "pruned_share": round(pruned, 3),
        "best_val_acc": summary["best_value"], "best_params": summary["best_params"],
        "overhead_median_s": round(statistics.median(overheads), 3) if overheads else None,
        "overhead_max_s": round(max(overheads), 3) if overheads else None,
        "overhead_first_s": round(by_start[0], 3) if by_start else None,
        "overhead_rest_median_s": round(statistics.median(by_start[1:]), 3) if len(by_start) > 1 else None,
        "overhead_by_status": {s: round(statistics.median([t.overhead_s for t in snap.trials if t.status == s]), 3)
                               for s in summary["counts"]},
        "epoch_seconds": round(sum(e.seconds for t in snap.trials for e in t.epochs), 1),
        # the spare started with the manager, plus any later (Ray's trials use Ray's workers, not these)
        "workers_started": len(started_workers) + 1 if args.executor == "local" else None,
        "runs_in_store": len(runs),
        "bars": {"wall < 240 s": wall < 240, "best >= 97.5 %": (summary["best_value"] or 0) >= 0.975,
                 "pruned >= 1/4": pruned >= 0.25,
                 "overhead < 0.5 s": bool(overheads) and statistics.median(overheads) < 0.5},
    }
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
