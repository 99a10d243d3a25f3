"""Command line: `python -m core train|bench|compare|speedup-map|sweep ...`, the same engine as the dashboard,
headless.

`train` prints one JSON object per epoch on stdout and a final summary object; people-readable
progress goes to stderr. Exit status: 0 finished and recorded, 1 the run did not finish (stopped,
diverged, interrupted), 2 bad options or a run that could not start, 3 finished but not fully
recorded in the run database (the warning on stderr says what is missing and how to fix it).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid

import torch

from .config import (DATASETS, ACTIVATIONS, DEVICES, OPTIMIZERS, PIPELINES, ConfigError, LabError, Phase, RunConfig,
                     RunStatus, StoreError, parse_hidden_sizes, parse_schedule)
from .engine.data import load_dataset, missing_data_dir
from .engine.devices import default_cpu_threads, set_cpu_threads
from .engine.train import EpochResult
from .runs.reports import COMPARISON, SPEEDUP_MAP
from .runs.store import Store, db_path_from_env
from .studies.compare import DEFAULT_TARGET, comparison_payload, comparison_title, run_in_process
from .studies.legs import Leg, check_legs, default_legs
from .studies.speedup_map import (ESTIMATE_CONFIRM_S, MapGrid, contention, default_map_legs, duration_text,
                                  estimate_seconds, estimate_sentence, map_title, measure_gemm_rates, run_speedup_map)

EXIT_NOT_RECORDED = 3


class CliError(LabError):
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
    add_sweep_command(commands)
    return parser


def add_compare_commands(commands) -> None:
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
            return cmd_bench(args)
        if args.command == "compare":
            return cmd_compare(args)
        if args.command == "speedup-map":
            return cmd_speedup_map(args)
        if args.command == "sweep":
            return cmd_sweep(args)
    except LabError as exc:  # CliError, ConfigError, DataError, DeviceError, TrainingError, StoreError...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .runs.training_run import TrainingRun

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
    if run.status != RunStatus.FINISHED:
        print(f"run ended: {run.status}{': ' + run.message if run.message else ''}", file=sys.stderr)
        return 1
    return EXIT_NOT_RECORDED if summary["store_warning"] else 0


# -- bench --------------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    """`python -m core bench`: progress and a readable summary on stderr, the rows as one JSON list on stdout.
    (main has set --threads for the whole process already.)"""
    from .studies.bench import row_text, run_bench

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    dataset = load_dataset("mnist", args.data_dir)
    if dataset.source != "full":
        log(f"warning: {dataset.note}")
    kinds = None if args.devices == "auto" else [k.strip() for k in args.devices.split(",")]
    results = run_bench(dataset, kinds, args.tutorial_epochs, log=log)
    for row in results:
        log(row_text(row))
        for note in row["distorted"]:
            log(f"warning: {note}")
    print(json.dumps(results, indent=1))
    return 0


# -- compare ------------------------------------------------------------------------------------------
def cmd_compare(args) -> int:
    """`python -m core compare`: JSON per leg per epoch on stdout, then a summary object."""
    legs = [Leg.parse(text) for text in args.leg] if args.leg else default_legs(args.with_pipeline)
    base = config_from_args(args)
    check_legs(legs, torch.get_num_threads())  # a CPU leg without threads= trains with these
    phases = list(parse_schedule(args.schedule) if args.schedule else [Phase(base.epochs, base.lr)])
    base = base.replace(epochs=phases[0].epochs, lr=phases[0].lr)
    if not 0 < args.target <= 1:
        raise ConfigError(f"--target: a validation accuracy between 0 and 1; got {args.target}")
    store = None if args.no_db else Store(args.db)
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    comparison_id = uuid.uuid4().hex[:12]
    created = time.time()

    def on_leg(i, leg, run) -> None:
        if run.dataset.note and i == 0:
            print(f"note: {run.dataset.note}", file=sys.stderr)
        print(f"leg {i}: {leg.label()} on {run.trainer.device_label}, {config_line(run)}", file=sys.stderr, flush=True)

    def on_epoch(i, result: EpochResult) -> None:
        print(json.dumps({"leg": i, "leg_label": legs[i].label(), "leg_spec": legs[i].spec(), **result.to_dict()}),
              flush=True)
        mark = " (warm-up)" if result.warmup else ""
        print(f"  leg {i} epoch {result.epoch:3d}  val_loss {result.val_loss:.5f}  val_acc {result.val_acc:.2%}  "
              f"{result.seconds:.3f}s{mark}", file=sys.stderr, flush=True)

    try:
        leg_runs = run_in_process(base, legs, phases, data_dir=args.data_dir, store=store, cancel=cancel,
                                  on_epoch=on_epoch, on_leg=on_leg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    stopped = cancel.is_set() or len(leg_runs) < len(legs)
    status = RunStatus.STOPPED if stopped else RunStatus.FINISHED
    payload = comparison_payload(comparison_id, base, legs, phases, leg_runs, status, args.target, created)
    if store is not None:
        try:
            store.save_report(COMPARISON, payload, comparison_title(base, legs), comparison_id)
        except StoreError as exc:
            print(f"warning: the comparison was not saved: {exc}", file=sys.stderr)
    summary = {"type": "summary", "comparison_id": comparison_id, "status": status, **payload["summary"],
               "startup_s": payload["startup_s"]}
    print(json.dumps(summary), flush=True)
    for row in payload["summary"]["legs"]:
        median = f"{row['median_epoch_s']:.3f} s/epoch" if row["median_epoch_s"] else "no timed epoch"
        speed = f", {row['speedup']:.2f}x" if row["speedup"] else ""
        print(f"leg {row['index']} {row['label']}: {median}{speed} ({row['status']})", file=sys.stderr)
    for key in ("same_start_text", "drift_text", "pipeline_text"):
        if payload["summary"][key]:
            print(payload["summary"][key], file=sys.stderr)
    if payload["summary"]["contention_text"]:
        print(f"warning: {payload['summary']['contention_text']}", file=sys.stderr)
    return 0 if all(r.status == RunStatus.FINISHED for r in leg_runs) and not stopped else 1


def config_line(run) -> str:
    trainer = run.trainer
    return f"{trainer.n_train:,} train / {trainer.n_val:,} validation samples"


# -- speedup-map --------------------------------------------------------------------------------------
def _int_list(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--{name}: a comma list of whole numbers, e.g. 32,128; got {text!r}") from None


def add_map_options(parser) -> None:
    g = MapGrid()
    parser.add_argument("--hidden-sizes", default=",".join(map(str, g.hidden_sizes)),
                        help="comma list (default %(default)s)")
    parser.add_argument("--layers", default=",".join(map(str, g.layers)),
                        help="hidden layers, comma list (default %(default)s)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, g.batch_sizes)),
                        help="comma list (default %(default)s)")
    parser.add_argument("--steps", type=int, default=g.steps, help="timed steps per cell and leg (default %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=g.warmup_steps,
                        help="untimed steps first (default %(default)s)")
    parser.add_argument("--leg", action="append", help="device=cpu,threads=1 ... (repeat; the first is the baseline; "
                                                       "default: GPU vs CPU, or CPU 1 thread vs all threads)")
    parser.add_argument("--dataset", choices=DATASETS, default=RunConfig.dataset)
    parser.add_argument("--data-dir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db", help="SQLite file to keep the map in (default: $RUNS_DB or ./runs.db)")
    parser.add_argument("--no-db", action="store_true", help="do not keep the map")
    parser.add_argument("--yes", action="store_true",
                        help=f"run a map estimated over {ESTIMATE_CONFIRM_S:.0f} s without asking (needed when stdin "
                             f"is not a terminal)")
    parser.add_argument("--id", help=argparse.SUPPRESS)  # names the map (the id a script will look it up by)


def grid_from_args(args) -> MapGrid:
    return MapGrid(_int_list(args.hidden_sizes, "hidden-sizes"), _int_list(args.layers, "layers"),
                   _int_list(args.batch_sizes, "batch-sizes"), args.steps, args.warmup_steps)


def cmd_speedup_map(args) -> int:
    """`python -m core speedup-map`: a JSON line per finished cell, then the whole map as one JSON object."""
    grid = grid_from_args(args)
    legs = [Leg.parse(text) for text in args.leg] if args.leg else default_map_legs()
    check_legs(legs)
    store = None if args.no_db else Store(args.db)
    dataset = load_dataset(args.dataset, args.data_dir)
    if dataset.note:
        print(f"note: {dataset.note}", file=sys.stderr)
    rates = measure_gemm_rates(legs)
    estimate = estimate_seconds(grid, rates, dataset.input_size, dataset.num_classes)
    print(f"estimate: {estimate_sentence(grid, legs, estimate)}", file=sys.stderr, flush=True)
    if estimate > ESTIMATE_CONFIRM_S and not args.yes and not confirmed(estimate):
        return 1
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    map_id = args.id or os.urandom(6).hex()

    def on_leg(info) -> None:
        print(f"leg {info['label']} ({info['device']}): GEMM {info['gemm_gflops']:.1f} GFLOP/s", file=sys.stderr,
              flush=True)

    def on_cell(cell, done, total) -> None:
        print(json.dumps({"type": "cell", "done": done, "total": total, **cell}), flush=True)
        times = "  ".join(f"{t['step_ms']:8.3f} ms" for t in cell["legs"])
        print(f"[{done:2d}/{total}] layers {cell['layers']} hidden {cell['hidden']:5d} batch {cell['batch']:5d}  "
              f"{times}  speedup {cell['speedup'][-1]:.2f}x", file=sys.stderr, flush=True)

    try:
        result = run_speedup_map(grid, legs, dataset, cancel=cancel, on_cell=on_cell, on_leg=on_leg, seed=args.seed,
                                 map_id=map_id, gemm_rates=rates)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    if contention(result):
        print(f"warning: {contention(result)}", file=sys.stderr)
    if store is not None and result["cells"]:
        try:
            store.save_report(SPEEDUP_MAP, result, map_title(result), map_id)
        except StoreError as exc:
            print(f"warning: the map was not saved: {exc}", file=sys.stderr)
    print(json.dumps(result), flush=True)
    return 0 if result["status"] == RunStatus.FINISHED else 1


def confirmed(estimate: float) -> bool:
    """Over a minute: ask on a terminal; without one (a script, a pipe) refuse and say how to go on."""
    if not sys.stdin.isatty():
        raise ConfigError(f"this map would take about {duration_text(estimate)}, over {ESTIMATE_CONFIRM_S:.0f} s: "
                          f"pass --yes to run it, or measure fewer or smaller cells (--hidden-sizes, --layers, "
                          f"--batch-sizes, --steps)")
    try:
        answer = input(f"This map would take about {duration_text(estimate)}. Run it? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("not started", file=sys.stderr)
    return False


# -- sweep --------------------------------------------------------------------------------------------
def add_sweep_command(commands) -> None:
    from .studies.sweep import EXECUTORS, PRUNERS, SAMPLERS, SweepSpec
    from .studies.sweep_space import DEFAULT_SPACE

    d = SweepSpec(DEFAULT_SPACE)
    sweep = commands.add_parser(
        "sweep", help="search hyperparameters with Optuna; every trial is a run in the store; JSON per trial",
        description="The space is NAME=LOW..HIGH[:log], NAME=A|B or NAME=VALUE, comma separated, over hidden (width "
                    "of each hidden layer), layers, batch_size, lr, weight_decay, momentum, activation, optimizer. "
                    "The objective is a trial's best validation accuracy.")
    sweep.add_argument("--space", default=DEFAULT_SPACE, help="default: %(default)s")
    sweep.add_argument("--trials", type=int, default=d.trials, help="trials to run (default %(default)s)")
    sweep.add_argument("--epochs", type=int, default=d.epochs, help="epochs per trial (default %(default)s)")
    sweep.add_argument("--sampler", choices=SAMPLERS, default=d.sampler)
    sweep.add_argument("--pruner", choices=PRUNERS, default=d.pruner)
    sweep.add_argument("--seed", type=int, help="the sampler's seed: the same seeded sweep tries the same params")
    sweep.add_argument("--executor", choices=EXECUTORS, default=d.executor,
                       help="local: this machine's workers; ray: Ray Tune on the cluster RAY_ADDRESS names, or a local "
                            "Ray (pip install -r requirements-cluster.txt)")
    sweep.add_argument("--parallel", type=int, default=d.parallel,
                       help="trials at once (local: a GPU only; ray: each trial takes 1 CPU or 1 GPU; default 1)")
    sweep.add_argument("--dataset", choices=DATASETS, default=d.base.dataset)
    sweep.add_argument("--device", choices=DEVICES, default=d.base.device)
    sweep.add_argument("--data-dir", help="folder holding MNIST/raw/... (default: $DATA_DIR or ./data)")
    sweep.add_argument("--threads", type=int, help="torch CPU threads per trial (default: cores - 1)")
    sweep.add_argument("--db", help="SQLite file for run history (default: $RUNS_DB or ./runs.db); the study is "
                                    "kept beside it (runs.db -> runs.sweeps.db)")
    sweep.add_argument("--resume", metavar="SWEEP_ID", help="run the trials a stopped or killed sweep has left "
                                                            "(its own settings are used; the options above are not)")


def cmd_sweep(args) -> int:
    """`python -m core sweep`: one JSON object per ended trial on stdout, then a summary object."""
    from .runs.manager import RunManager
    from .studies.sweep import Sweeps, SweepSpec, check_runnable, stored_spec
    from .studies.sweep_space import parse_space

    if args.resume:
        try:
            spec = stored_spec(db_path_from_env(args.db), args.resume)
        except KeyError as exc:
            raise CliError(f"--resume: {exc.args[0]}") from None
    else:
        spec = SweepSpec(parse_space(args.space), trials=args.trials, epochs=args.epochs, sampler=args.sampler,
                         pruner=args.pruner, seed=args.seed, base=RunConfig(dataset=args.dataset, device=args.device),
                         parallel=args.parallel, executor=args.executor)
    check_runnable(spec)
    store = Store(args.db)  # a database that cannot be used is a bad option (exit 2), said before any worker starts
    manager = RunManager(db_path=store.path, data_dir=args.data_dir, cpu_threads=args.threads or default_cpu_threads(),
                         preload=spec.base.dataset, max_gpu_runs=spec.parallel)
    on_ray = spec.executor == "ray"
    try:
        if on_ray:  # joined here, on the main thread, and left before exit (see sweep_ray.disconnect)
            from .studies.sweep_ray import connect
            connect()
        sweeps = Sweeps(manager)
        sweep_id = sweeps.resume(args.resume) if args.resume else sweeps.start(spec)
        return _follow_sweep(sweeps, sweep_id)
    finally:
        manager.shutdown()
        if on_ray:
            from .studies.sweep_ray import disconnect
            disconnect()


def _follow_sweep(sweeps, sweep_id: str) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    snap = sweeps.snapshot(sweep_id)
    print(f"sweep {sweep_id}: {snap.planned - len(snap.trials)} trial(s) of {snap.spec.epochs} epoch(s), "
          f"{snap.spec.sampler} sampler, {snap.spec.pruner} pruner, space {snap.spec.space.text()}",
          file=sys.stderr, flush=True)
    printed = {t.number for t in snap.trials if not t.active}
    while True:
        try:
            snap = sweeps.wait(sweep_id, 0.2)
        except KeyboardInterrupt:
            stop.set()
            continue
        if stop.is_set():
            sweeps.stop(sweep_id)
        for trial in snap.trials:
            if trial.number in printed or trial.active or trial.seconds is None:
                continue
            printed.add(trial.number)
            print(json.dumps(trial.result()), flush=True)
            value = f"{trial.value:.2%}" if trial.value is not None else "-"
            params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
            print(f"trial {trial.number:3d} {trial.status:<9} {value:>7}  {len(trial.epochs)} epoch(s) "
                  f"{trial.seconds:6.1f} s  {params}", file=sys.stderr, flush=True)
        if not snap.active:
            break
    summary = snap.summary()
    print(json.dumps(summary), flush=True)
    best = f"{summary['best_value']:.2%} (trial {summary['best_trial']})" if summary["best_value"] is not None \
        else "no trial finished"
    print(f"sweep {sweep_id} {snap.status}: best {best}; {summary['counts']}; {summary['total_seconds']:.1f} s"
          f"{'; ' + snap.message if snap.message else ''}", file=sys.stderr)
    return 0 if snap.status == RunStatus.FINISHED else 1
