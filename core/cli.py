"""Command line: `python -m core train|bench|compare|speedup-map ...`, the same engine as the dashboard, headless.

`train` prints one JSON object per epoch on stdout and a final summary object; people-readable
progress goes to stderr. Exit status: 0 finished and recorded, 1 the run did not finish (stopped,
diverged, interrupted), 2 bad options or a run that could not start, 3 finished but not fully
recorded in the run database (the warning on stderr says what is missing and how to fix it).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

import torch

from .config import (DATASETS, ACTIVATIONS, DEVICES, OPTIMIZERS, PIPELINES, ConfigError, RunConfig, parse_hidden_sizes,
                     parse_schedule)
from .data import DataError, missing_data_dir
from .devices import DeviceError, default_cpu_threads, set_cpu_threads
from .store import Store, StoreError
from .train import FINISHED, TrainingError

EXIT_NOT_RECORDED = 3


class CliError(Exception):
    pass


def _hidden_sizes(values: list[str] | None) -> tuple[int, ...]:
    if not values:
        return RunConfig.hidden_sizes
    sizes = []
    for value in values:
        try:
            sizes.extend(parse_hidden_sizes(value))
        except ConfigError as exc:
            raise CliError(f"--hidden: {str(exc).removeprefix('hidden_sizes: ')}") from None
    return tuple(sizes)


# Options whose value names something: an empty one ("--db ''", often an unset shell variable) is a mistake,
# not a request for the default.
NON_EMPTY = {"db": "give a file name, or --no-db to record nothing",
             "data_dir": "give a folder, or leave the option out to use $DATA_DIR or ./data",
             "schedule": "give phases such as 5@0.5,5@0.1, or leave the option out to use --epochs and --lr"}


def check_options(args: argparse.Namespace) -> None:
    """Refuse what argparse lets through: empty names, and a thread count RunConfig would refuse (it is set for
    the whole process before any config is built)."""
    for dest, hint in NON_EMPTY.items():
        value = getattr(args, dest, None)
        if value is not None and not value.strip():
            raise CliError(f"--{dest.replace('_', '-')} is empty: {hint}")
    if getattr(args, "threads", None) is not None:
        try:
            RunConfig(threads=args.threads)
        except ConfigError as exc:
            raise CliError(f"--{exc}") from None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    d = RunConfig()
    parser.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    parser.add_argument("--data-dir", help="folder holding MNIST/raw/... (default: $DATA_DIR or ./data)")
    parser.add_argument("--hidden", action="append",
                        help="hidden layer size; repeat or give a comma list for several layers (default 32)")
    parser.add_argument("--activation", choices=ACTIVATIONS, default=d.activation)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    parser.add_argument("--momentum", type=float, default=d.momentum)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--device", choices=DEVICES, default=d.device)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--pipeline", choices=PIPELINES, default=d.pipeline)
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: $TRAIN_THREADS, else cores - 1, as in the dashboard)")
    parser.add_argument("--no-cuda-graphs", action="store_true",
                        help="on CUDA, launch every kernel of a step eagerly instead of replaying a captured graph")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(dataset=args.dataset, hidden_sizes=_hidden_sizes(args.hidden), activation=args.activation,
                     batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, optimizer=args.optimizer,
                     momentum=args.momentum, weight_decay=args.weight_decay, device=args.device, seed=args.seed,
                     val_fraction=args.val_fraction, pipeline=args.pipeline, threads=args.threads,
                     cuda_graphs=not getattr(args, "no_cuda_graphs", False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one model, JSON per epoch on stdout")
    add_config_options(train)
    train.add_argument("--schedule", help="phases EPOCHS@LR,...; e.g. 5@0.5,5@0.1 (overrides --epochs/--lr)")
    train.add_argument("--db", help="SQLite file for run history (default: $RUNS_DB or ./runs.db)")
    train.add_argument("--no-db", action="store_true", help="do not record the run")
    bench = commands.add_parser("bench", help="tutorial pipeline vs resident pipeline vs FLOP floor")
    bench.add_argument("--data-dir")
    bench.add_argument("--tutorial-epochs", type=int, default=3, help="epochs of the slow pipeline (1 is warm-up)")
    bench.add_argument("--threads", type=int,
                       help="torch CPU threads for every leg (default: $TRAIN_THREADS, else cores - 1)")
    bench.add_argument("--devices", default="auto", help="comma list: cpu,cuda (default: cpu, plus cuda if present)")
    add_compare_commands(commands)
    return parser


def add_compare_commands(commands) -> None:
    from .compare import DEFAULT_TARGET
    from .speedup_map import add_map_options

    compare = commands.add_parser(
        "compare", help="one experiment on several legs, one after another; JSON per leg per epoch, then a summary",
        description="Legs are KEY=VALUE lists: device=cpu|cuda|mps, threads=N, pipeline=resident|dataloader, "
                    "graphs=on|off. The first leg is the baseline for speedups. Train options set the experiment; "
                    "each leg overrides device, threads and pipeline.")
    compare.add_argument("--leg", action="append",
                         help="e.g. device=cpu,threads=1 (repeat; default: CPU vs CUDA, or CPU 1 vs all threads)")
    compare.add_argument("--with-pipeline", action="store_true",
                         help="with the default legs: add the tutorial's DataLoader pipeline leg")
    compare.add_argument("--target", type=float, default=DEFAULT_TARGET,
                         help="validation accuracy (0-1) for time-to-target (default %(default)s)")
    add_config_options(compare)
    compare.add_argument("--schedule", help="phases EPOCHS@LR,...; e.g. 5@0.5,5@0.1 (overrides --epochs/--lr)")
    compare.add_argument("--db", help="SQLite file for run history (default: $RUNS_DB or ./runs.db)")
    compare.add_argument("--no-db", action="store_true", help="do not record the legs' runs")
    speedup = commands.add_parser("speedup-map", help="time training steps over a grid of sizes on each leg; JSON",
                                  description="Speedup of each leg over the first (GPU over CPU, or all CPU threads "
                                              "over one) per hidden size, layer count and batch size.")
    add_map_options(speedup)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_options(args)
        # A mistyped --data-dir (or DATA_DIR) is a bad option, not a reason to train on the fallback sample.
        problem = missing_data_dir(getattr(args, "data_dir", None))
        if problem:
            raise CliError(problem)
        # One default everywhere (the dashboard's workers too): a leg or --threads overrides it.
        set_cpu_threads(getattr(args, "threads", None) or default_cpu_threads())
        if args.command == "train":
            return cmd_train(args)
        if args.command == "bench":
            from .bench import run_bench
            return run_bench(args)
        if args.command == "compare":
            from .compare import cmd_compare
            return cmd_compare(args)
        if args.command == "speedup-map":
            from .speedup_map import cmd_speedup_map
            return cmd_speedup_map(args)
    except (CliError, ConfigError, DataError, DeviceError, TrainingError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .runs import TrainingRun

    config = config_from_args(args)
    phases = parse_schedule(args.schedule) if args.schedule else None
    if phases:
        config = config.replace(epochs=phases[0].epochs, lr=phases[0].lr)
    store = None if args.no_db else Store(args.db)
    cancel = threading.Event()
    run = None

    def on_sigterm(*_) -> None:
        # SIGTERM (e.g. a service manager) ends the run between batches; it is recorded as interrupted.
        if run is not None:
            run.interrupt("stopped by SIGTERM")
        cancel.set()

    def on_store_warning(warning: str) -> None:  # said when it happens, not only at the end
        print(f"warning: {warning}" if warning else "note: the run database works again; the run is saved",
              file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, on_sigterm)

    def on_epoch(result) -> None:
        print(json.dumps(result.to_dict()), flush=True)
        mark = " (warm-up)" if result.warmup else ""
        print(f"epoch {result.epoch:3d}  lr {result.lr:<8g} train_loss {result.train_loss:.4f}  "
              f"val_loss {result.val_loss:.4f}  val_acc {result.val_acc:.2%}  {result.seconds:.3f}s{mark}",
              file=sys.stderr, flush=True)

    run = TrainingRun(config, store=store, data_dir=args.data_dir, cancel=cancel, origin="cli",
                      on_store_warning=on_store_warning)
    if cancel.is_set():  # SIGTERM while the data was loading
        run.interrupt("stopped by SIGTERM")
    if run.dataset.note:
        print(f"note: {run.dataset.note}", file=sys.stderr)
    print(f"run {run.id}: {config.describe()} on {run.trainer.device_label}, "
          f"{run.trainer.n_train:,} train / {run.trainer.n_val:,} validation samples, "
          f"{torch.get_num_threads()} CPU thread(s)", file=sys.stderr, flush=True)
    try:
        run.run_schedule(phases or [parse_schedule(f"{config.epochs}@{config.lr}")[0]], on_epoch)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    summary = {**run.summary(), "cpu_threads": torch.get_num_threads()}
    print(json.dumps(summary), flush=True)
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if summary["store_warning"]:
        print(f"warning: {summary['store_warning']}", file=sys.stderr)
    if run.status != FINISHED:
        print(f"run ended: {run.status}{': ' + run.message if run.message else ''}", file=sys.stderr)
        return 1
    return EXIT_NOT_RECORDED if summary["store_warning"] else 0
