"""Sweeps on Ray Tune (`--executor ray`): the same sweep as the local executor's, its trials run by Tune on a Ray
cluster (a local one started on a laptop; RAY_ADDRESS names a cluster's head).

Tune owns the loop. Its OptunaSearch asks the sweep's own study (the SQLite study file, the sweep's sampler, the
space's own `suggest` as a define-by-run space), its ASHAScheduler prunes (pruner median: ASHA with reduction
factor 2, halving: 4, as Optuna's SuccessiveHalvingPruner; none: first in, first out), and each trial asks for
1 CPU, or 1 GPU (with a CPU) on CUDA. Workers are reused between trials, so a worker reads the data once.

A trial is a TrainingRun in a Ray worker process, on any node. It writes its run through a relay (_Relay): each
store write travels with the next per-epoch `tune.report`, and a Tune callback in this process (_Listener, on
Tune's driver thread) replays them into the run store and the sweep's live snapshot (SweepDrive). Only this
process touches the SQLite files, so the nodes share no filesystem; each needs the dataset at the same DATA_DIR
(or a folder it can download into) and the same requirements. The weights a run keeps travel the same way (the
latest is written when the trial ends), so Continue works on any trial.

A trial ASHA stops is ended by Tune in its worker (reports do not wait for the driver, so the worker may be an epoch
further on; that epoch is dropped): its run ends "pruned" with the epochs and weights it had sent by the report
ASHA judged, but, unlike a local pruned trial, without test accuracy. Stop ends Tune's loop; its running trials end
"stopped" with the epochs and weights they had sent. (A TrainingRun sends weights after an epoch when that keeps
saving under a tenth of its time; where the last epochs came without them, Continue goes on from the last weights.)
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import time

import psutil

from .sweep_executors import TrialOutcome, before_importing_ray

before_importing_ray()
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from ..config import PROJECT_ROOT, RunStatus, StoreError  # noqa: E402
from ..engine.data import availability_note, data_dir_from_env, data_dir_origin, load_dataset  # noqa: E402
from ..engine.devices import set_cpu_threads  # noqa: E402
from ..engine.train import EpochResult  # noqa: E402
from ..runs.training_run import TrainingRun, one_line  # noqa: E402
from .sweep_state import SweepSpec, tell_study  # noqa: E402

METRIC = "val_acc"  # reported every epoch; ASHA compares it at its rungs
TIME_ATTR = "epoch"  # ASHA's clock: only per-epoch reports carry it (the final report does not, so ASHA lets it be)
WRITES = "lab_writes"  # a report's store writes, taken out of the result before Tune keeps or logs it
TRIAL = "lab_trial"  # the study's trial number, in a trial's Tune config
ASHA_REDUCTION = {"median": 2, "halving": 4}  # median: the better half goes on at each rung
STORE_WRITES = ("create_run", "add_phase", "add_epoch", "finish_run", "set_telemetry", "save_checkpoint")


def connect() -> None:
    """Join Ray once per process: RAY_ADDRESS's cluster, a running local one, or a new local one. The trials import
    `core` from this checkout (uploaded to each node as a py_module); their output stays in the nodes' logs."""
    if not ray.is_initialized():
        ray.init(log_to_driver=False, runtime_env={"py_modules": [str(PROJECT_ROOT / "core")]})
        atexit.register(disconnect)  # runs before Ray's own exit handler (registered by init): see disconnect


def disconnect() -> None:
    """Leave Ray (a local Ray this process started stops). A process that joined Ray from a thread other than the
    main one (the dashboard's sweep thread) and exits still joined hangs for 60 s and exits 1 ("Failed to connect
    to GCS"); leaving first, from the main thread, exits at once."""
    if not ray.is_initialized():
        return
    started = psutil.Process().children(recursive=True)  # a local Ray's processes (a cluster's are not ours)
    since = min((p.create_time() for p in started), default=time.time())
    ray.shutdown()
    end_processes([p for p in started if p.is_running()] + _orphaned_agents(since))


def _orphaned_agents(since: float) -> list[psutil.Process]:
    """Ray processes of this process group orphaned since `since` (a local Ray's DashboardAgent and RuntimeEnvAgent:
    started detached, they outlived ray.shutdown() here, ~170 MB per server start, and ignore SIGTERM)."""
    group, agents = os.getpgrp(), []
    for process in psutil.process_iter(["name", "ppid", "create_time"]):
        with contextlib.suppress(psutil.Error):
            info = process.info
            if (info["name"] or "").startswith("ray::") and info["ppid"] == 1 and info["create_time"] >= since \
                    and os.getpgid(process.pid) == group:
                agents.append(process)
    return agents


def end_processes(processes: list[psutil.Process], grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever is still running after grace_s (zombies are left to their parent)."""
    running = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
    for process in running:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(running, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


# -- in a Ray worker ------------------------------------------------------------------------------------------
class _Relay:
    """The run store a trial's TrainingRun writes to in its Ray worker: it keeps each write (method, args, kwargs)
    for the next report; the driver replays them into the real store (_Drive.replay)."""

    def __init__(self):
        self.writes: list[tuple[str, tuple, dict]] = []

    def take(self) -> list:
        writes, self.writes = self.writes, []
        return writes

    def __getattr__(self, name: str):
        if name not in STORE_WRITES:
            raise AttributeError(name)
        return lambda *args, **kwargs: self.writes.append((name, args, kwargs))


def train_trial(params: dict, job: dict) -> None:
    """One trial, in a Ray worker: a TrainingRun reporting each epoch (and its store writes) to Tune, then one last
    report with what it wrote after its last epoch (test accuracy, status, weights). A trial that fails ends
    normally with its failure recorded: Tune's own error path is for workers that die."""
    set_cpu_threads(job["threads"])
    params = dict(params)
    number = params.pop(TRIAL)
    relay, last = _Relay(), {METRIC: 0.0}
    spec = SweepSpec.from_dict(job["spec"])

    def on_epoch(epoch: EpochResult) -> None:
        last[METRIC] = epoch.val_acc
        tune.report({TIME_ATTR: epoch.epoch, METRIC: epoch.val_acc, WRITES: relay.take()})

    failure = ""
    try:
        config = spec.trial_config(params).replace(device=job["device"])
        dataset = load_dataset(config.dataset, job["data_dir"], allow_sample=job["allow_sample"])
        run = TrainingRun(config, store=relay, dataset=dataset, origin="ray",
                          tags={"sweep_id": job["sweep_id"], "trial": number})
        run.train_phase(on_epoch=on_epoch)
    except Exception as exc:  # its run records the failure itself, when it got as far as having one
        failure = one_line(exc)
    tune.report({METRIC: last[METRIC], WRITES: relay.take(), "failure": failure})


# -- in this process (Tune's driver) ----------------------------------------------------------------------------
class _Trial:
    """What the driver knows of one Tune trial while it runs (driver-only and mutable: Tune's thread alone uses it)."""

    def __init__(self, ot_trial, asked: float):
        self.ot, self.number, self.asked = ot_trial, ot_trial.number, asked
        self.run_id, self.status, self.message = "", "", ""
        self.epochs: list[EpochResult] = []
        self.blob: bytes | None = None  # the latest weights it sent, written when it ends
        self.pruned_at = 0  # the epoch ASHA stopped it at
        self.failure = ""
        self.ended = False


class _Drive:
    """One sweep's Tune run as seen from this process: Tune's trials by id, replayed into the store and SweepDrive."""

    def __init__(self, sweep, store, stop: threading.Event):
        self.sweep, self.store, self.stop = sweep, store, stop
        self.trials: dict[str, _Trial] = {}
        self.tune_trials: dict[str, object] = {}

    def asked(self, trial_id: str, ot_trial, params: dict) -> None:
        self.trials[trial_id] = _Trial(ot_trial, time.monotonic())
        self.sweep.asked(ot_trial, params)

    def started(self, tune_trial) -> None:
        self.tune_trials[tune_trial.trial_id] = tune_trial
        trial = self.trials.get(tune_trial.trial_id)
        if trial is not None and not trial.run_id:
            self.sweep.status(trial.ot, "", RunStatus.LOADING)

    def result(self, tune_trial, result: dict) -> None:
        trial = self.trials.get(tune_trial.trial_id)
        writes = result.pop(WRITES, [])
        if trial is None:
            return
        self.replay(trial, writes)
        trial.failure = result.get("failure") or trial.failure
        if result.get("done") and TIME_ATTR in result:  # the scheduler's STOP, decided on this epoch's report
            trial.pruned_at = result[TIME_ATTR]

    def replay(self, trial: _Trial, writes: list) -> None:
        for name, args, kwargs in writes:
            if name == "save_checkpoint":
                trial.blob = args[1]
                continue
            try:
                getattr(self.store, name)(*args, **kwargs)
            except StoreError:
                pass  # the trial's record stays as the store has it; the sweep goes on, as a local run does
            if name == "create_run":
                trial.run_id = kwargs["run_id"]
                self.sweep.status(trial.ot, trial.run_id, RunStatus.RUNNING)
            elif name == "add_epoch":
                epoch = EpochResult(**args[1])
                trial.epochs.append(epoch)
                self.sweep.epoch(trial.ot, epoch)
            elif name == "finish_run":
                trial.status, trial.message = args[1], args[2] if len(args) > 2 else kwargs.get("message", "")

    def end(self, trial_id: str, error: str = "") -> None:
        """A trial is over (Tune's complete or error, or its loop ended): its run's status, weights and study record."""
        trial = self.trials.get(trial_id)
        if trial is None or trial.ended:
            return
        trial.ended = True
        epochs = self.sweep.spec.epochs
        if trial.pruned_at and trial.pruned_at < epochs and not trial.status:
            status = RunStatus.PRUNED
            acc = trial.epochs[-1].val_acc if trial.epochs else 0.0
            message = (f"pruned after epoch {trial.pruned_at} of {epochs} by Tune's ASHA scheduler (the "
                       f"{self.sweep.spec.pruner} setting): validation accuracy {acc:.2%} was behind the other "
                       f"trials' at that rung")
        elif trial.status:
            status, message = trial.status, trial.message
        elif self.stop.is_set():
            status, message = RunStatus.STOPPED, "stopped with its sweep"
        else:
            status = RunStatus.FAILED
            message = trial.failure or error or "its Ray worker ended before the trial did"
        try:
            if trial.run_id and status != trial.status:
                self.store.finish_run(trial.run_id, status, message)
            if trial.run_id and trial.blob is not None:
                self.store.save_checkpoint(trial.run_id, trial.blob)
        except StoreError:
            pass
        trial.blob = None
        outcome = TrialOutcome(trial.run_id, status, tuple(trial.epochs), message)
        self.sweep.ended(trial.ot, outcome, time.monotonic() - trial.asked)
        tell_study(trial.ot.study, trial.number, status, outcome.epochs)  # as the lanes tell it

    def error_text(self, trial_id: str) -> str:
        tune_trial = self.tune_trials.get(trial_id)
        try:
            error = tune_trial.get_pickled_error() if tune_trial is not None else None
        except Exception:
            error = None
        lines = str(error or "").strip().splitlines()
        return f"its Ray worker failed: {lines[-1]}" if lines else ""


_DRIVES: dict[str, _Drive] = {}  # sweep id -> its drive: Tune pickles its callbacks, which name a sweep, not hold it


def _drive(sweep_id: str) -> _Drive | None:
    return _DRIVES.get(sweep_id)


class _Search(OptunaSearch):
    """OptunaSearch on the sweep's study; each trial's number travels in its config. Tell is the driver's
    (_Drive.end), after the trial's record is complete."""

    def __init__(self, sweep_id: str, space, sampler, storage):
        super().__init__(space=space.suggest, metric=METRIC, mode="max", sampler=sampler, study_name=sweep_id,
                         storage=storage)
        self.sweep_id = sweep_id

    def suggest(self, trial_id: str):
        drive = _drive(self.sweep_id)
        if drive is None or drive.stop.is_set():
            return None
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        drive.asked(trial_id, ot_trial, params)
        return {**params, TRIAL: ot_trial.number}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if TIME_ATTR in result:  # epochs only, as the local lanes report them
            self._ot_trials[trial_id].report(result[METRIC], result[TIME_ATTR])

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self._completed_trials.add(trial_id)


class _Listener(tune.Callback):
    """Trial results into the store and the live snapshot, on Tune's driver thread."""

    def __init__(self, sweep_id: str):
        self.sweep_id = sweep_id

    def on_trial_start(self, iteration, trials, trial, **info):
        if (drive := _drive(self.sweep_id)) is not None:
            drive.started(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if (drive := _drive(self.sweep_id)) is not None:
            drive.result(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (drive := _drive(self.sweep_id)) is not None:
            drive.end(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        if (drive := _drive(self.sweep_id)) is not None:
            drive.end(trial.trial_id, drive.error_text(trial.trial_id))


class _Stop(tune.Stopper):
    """Ends Tune's loop once the sweep is stopped."""

    def __init__(self, sweep_id: str):
        self.sweep_id = sweep_id

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        drive = _drive(self.sweep_id)
        return drive is None or drive.stop.is_set()




def scheduler(spec: SweepSpec):
    """The pruner setting as a Tune scheduler: none -> FIFO; median, halving -> ASHA (grace period 1 epoch)."""
    if spec.pruner == "none":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=spec.epochs, grace_period=1,
                         reduction_factor=ASHA_REDUCTION[spec.pruner], stop_last_trials=False)


class RayExecutor:
    """Runs a sweep's trials with Ray Tune (see the module's docstring); `parallel` trials at once."""

    def __init__(self, manager, parallel: int = 1):
        self.store = manager.store
        named = getattr(manager, "data_dir", None)
        root = data_dir_from_env(named).resolve()
        if data_dir_origin(named) == "default":  # a local run makes ./data to download into; a node gets its path
            root.mkdir(parents=True, exist_ok=True)
        self.data_dir = str(root)  # absolute: Tune runs each trial in a folder of its own
        self.parallel = parallel

    def prepare(self, stop: threading.Event) -> None:
        connect()

    def resources(self, spec: SweepSpec) -> tuple[dict, str]:
        """What each trial asks Ray for, and the device it trains on ("auto": a GPU if the cluster has one)."""
        device = spec.base.device
        if device == "auto":
            device = "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"
        return ({"cpu": 1, "gpu": 1} if device == "cuda" else {"cpu": 1}), device

    def drive(self, sweep, stop: threading.Event) -> None:
        """Run the sweep's trials left on Tune; returns when they have ended or the sweep was stopped."""
        spec = sweep.spec
        if sweep.trials_left <= 0:
            return
        resources, device = self.resources(spec)
        # A node may fall back on the 5,000-digit sample only where this machine does too: when the full dataset is
        # here, a node without it fails its trial and says where the files go
        job = {"sweep_id": sweep.sweep_id, "spec": spec.to_dict(), "data_dir": self.data_dir, "device": device,
               "threads": 1, "allow_sample": availability_note(spec.base.dataset, self.data_dir) != ""}
        # Tune's new console output prints to stdout whatever its verbosity (the CLI's stdout is JSON lines): the
        # legacy reporter at verbose 0 prints nothing. (Its result files stay on: without them fit() ends warning
        # that it found no metrics.)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        drive = _DRIVES[sweep.sweep_id] = _Drive(sweep, self.store, stop)
        storage = tempfile.mkdtemp(prefix=f"tune-{sweep.sweep_id}-")  # Tune's own records; ours are in the store
        try:
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(train_trial, job=job), resources),
                tune_config=tune.TuneConfig(
                    search_alg=_Search(sweep.sweep_id, spec.space, sweep.sampler, sweep.storage),
                    scheduler=scheduler(spec), num_samples=sweep.trials_left, max_concurrent_trials=self.parallel,
                    reuse_actors=True),
                run_config=tune.RunConfig(name=sweep.sweep_id, storage_path=storage, verbose=0,
                                          callbacks=[_Listener(sweep.sweep_id)], stop=_Stop(sweep.sweep_id),
                                          failure_config=tune.FailureConfig(max_failures=0)))
            tuner.fit()
        finally:
            for trial_id in list(drive.trials):  # trials Tune's loop left running or queued when it ended
                drive.end(trial_id, "Tune's loop ended before it")
            _DRIVES.pop(sweep.sweep_id, None)
            shutil.rmtree(storage, ignore_errors=True)

