"""Background training runs for a long-lived UI process: start, watch, stop, continue, shut down.

Each run trains in a worker process (core.runs.worker) and the manager keeps an immutable snapshot of
it (core.runs.live), updated from the worker's messages by one thread per run; a UI polls
`snapshot(run_id)`. Runs on one device type wait their turn (the CPU's cores are shared, so one CPU run
trains at a time and later ones queue). Other timed work (a speedup map) is a job: it takes its turn in
the same queues (queue_job) and runs in a worker the same way (run_job). A spare worker is kept warm
(torch imported, MNIST loaded) so a Train click starts training at once. Once a run has ended, its status
is the store's: a snapshot never says one thing while the history says another.
"""
from __future__ import annotations

import atexit
import math
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace

from ..config import DeviceError, Phase, RunConfig, RunStatus, StoreError
from ..engine.data import CLASS_NAMES, IMAGE_SHAPES
from ..engine.devices import default_cpu_threads, device_label, resolve_device
from .history import stored_run
from .live import Entry, LiveRegistry
from ..engine.memory import oom_kills, oom_verdict, process_rss
from ..engine.model import LayerRow, layer_rows
from .store import Store
from .telemetry import TelemetrySample
from ..engine.train import BatchProgress, EpochResult
from .worker import WorkerProcess

DEVICE_ORDER = ("cpu", "cuda", "mps")  # a turn on several devices takes their queues in this order
QUEUED = RunStatus.QUEUED  # the old name, for the pages that import it from here
ACTIVE = (RunStatus.QUEUED, RunStatus.LOADING, RunStatus.RUNNING)  # a run that has not ended
CONTINUABLE = (RunStatus.FINISHED, RunStatus.STOPPED, RunStatus.PRUNED, RunStatus.INTERRUPTED)  # with an epoch
READY_TIMEOUT_S = 180  # a cold worker imports torch and reads the dataset
IDLE_REAP_S = 600.0  # a warm worker nobody used for this long is closed (~0.9 GB on full MNIST)
REAP_CHECK_S = 15.0
RSS_SAMPLE_S = 1.0  # how often a training worker's memory is read, to tell later whether the OOM killer ended it
SHUTDOWN_REASON = "the server shut down during the run"


@dataclass(frozen=True)
class RunSnapshot:
    run_id: str
    owner: str
    config: RunConfig
    status: str  # queued, loading, running, finished, stopped, diverged, failed, interrupted
    message: str = ""
    epochs: tuple[EpochResult, ...] = ()
    progress: BatchProgress | None = None
    # (position in epochs, mean training loss) per progress record while this server watched it: the per-batch curve
    batch_losses: tuple[tuple[float, float], ...] = ()
    planned_epochs: int = 0  # epochs this run will have when its queued phases end
    schedule: tuple[Phase, ...] = ()
    device: str = ""
    layers: tuple[LayerRow, ...] = ()
    parameters: int = 0
    n_train: int = 0
    n_val: int = 0
    data_title: str = ""
    data_note: str = ""
    test_acc: float | None = None
    store_warning: str = ""
    cpu_threads: int = 0
    queue_ahead: int = 0  # while queued: runs before this one on its device (training or waiting)
    telemetry: TelemetrySample | None = None  # the training process's latest machine figures, while it trains
    started_at: float = field(default_factory=time.time)
    live: bool = True  # False when read back from the store only

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def can_continue(self) -> bool:
        return self.status in CONTINUABLE and bool(self.epochs)


BATCH_LOSS_POINTS = 4000  # per-batch loss points a snapshot keeps: the page rebuilds its loss figure every poll


def with_batch_loss(points: tuple[tuple[float, float], ...], progress: BatchProgress) -> tuple:
    """The per-batch curve with this record's mean loss added; past BATCH_LOSS_POINTS every other point goes, so an
    hours-long run stays between half and all of the bound (old points thinned, new ones at full rate; the chart
    receives the thinned curve whole, once per halving)."""
    if progress.train_loss is None:
        return points
    points += ((progress.position, progress.train_loss),)
    return points[::2] if len(points) > BATCH_LOSS_POINTS else points


class _LiveRun(Entry):
    """What drives one run besides its snapshot: its worker, its place in a device queue, Stop."""

    def __init__(self, registry: LiveRegistry, run_id: str):
        super().__init__(registry, run_id)
        self.stop_requested = threading.Event()
        self.worker: WorkerProcess | None = None
        self.pending: list[Phase] = []
        self.tags: dict = {}  # its record's tags (core.runs.store.RUN_TAGS), for a failure recorded here
        self.ended_at = 0.0
        self.turn: DeviceTurn | None = None


class _DeviceQueue:
    """Turns on one device type, granted in the order runs were launched (a semaphore grants them in
    whatever order the waiting threads happen to wake)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._holders = 0

    def join(self) -> object:
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
        return ticket

    def acquire(self, ticket: object, timeout: float) -> bool:
        with self._cond:
            granted = self._cond.wait_for(
                lambda: self._waiting[0] is ticket and self._holders < self.capacity, timeout)
            if granted:
                self._waiting.popleft()
                self._holders += 1
                self._cond.notify_all()
            return granted

    def leave(self, ticket: object) -> None:
        with self._cond:
            self._waiting.remove(ticket)
            self._cond.notify_all()

    def ahead_of(self, ticket: object) -> int:
        """Runs that train before this ticket's: those holding the device and those queued earlier."""
        with self._cond:
            try:
                return self._holders + self._waiting.index(ticket)
            except ValueError:  # granted or left meanwhile
                return 0

    def release(self) -> None:
        with self._cond:
            self._holders -= 1
            self._cond.notify_all()


class DeviceTurn:
    """A place in the queues of one or more device types (a run: its device; a speedup map: the CPU and its
    legs' GPUs), taken when it is made, in the callers' order. Granted queue by queue in one fixed order, so
    two turns never wait for each other."""

    def __init__(self, queues: list[_DeviceQueue]):
        self._places = [(queue, queue.join()) for queue in queues]
        self._held = 0  # the first _held places are granted

    def acquire(self, timeout: float) -> bool:
        """Whether every queue has granted its place within `timeout` (places granted so far stay held)."""
        deadline = time.monotonic() + timeout
        for queue, ticket in self._places[self._held:]:
            if not queue.acquire(ticket, max(0.0, deadline - time.monotonic())):
                return False
            self._held += 1
        return True

    def ahead(self) -> int:
        """Runs and jobs that go before this turn on the queue it waits in now (0 once granted)."""
        places, held = self._places, self._held  # read once: the driver thread moves on meanwhile
        if held >= len(places):
            return 0
        queue, ticket = places[held]
        return queue.ahead_of(ticket)

    def release(self) -> None:
        """Give back the queues granted and leave those still waited in."""
        for i, (queue, ticket) in enumerate(self._places):
            if i < self._held:
                queue.release()
            else:
                queue.leave(ticket)
        self._places, self._held = [], 0


class RunManager:
    def __init__(self, db_path=None, data_dir=None, cpu_threads: int | None = None, max_cpu_runs: int = 1,
                 preload: str | None = None, idle_reap_s: float = IDLE_REAP_S, max_gpu_runs: int = 1):
        self.data_dir = data_dir
        self.store_warning = ""
        try:
            self.store: Store | None = Store(db_path)
        except StoreError as exc:
            self.store = None
            self.store_warning = f"{exc} Training still works, but its runs are NOT saved: run history is off."
        # The server and the browser need a core too: oversubscribed intra-op threads spin-wait and run
        # many times slower, not a little.
        self.cpu_threads = cpu_threads or default_cpu_threads()
        self.preload = preload
        self.idle_reap_s = idle_reap_s
        self._last_activity = time.monotonic()
        self._live: LiveRegistry[RunSnapshot, _LiveRun] = LiveRegistry()
        self._lock = threading.Lock()  # the spare worker and which run's worker is whose
        # Runs at once per device type: a GPU may train several small models side by side (a sweep's --parallel).
        self._queues = {"cpu": _DeviceQueue(max_cpu_runs), "cuda": _DeviceQueue(max_gpu_runs),
                        "mps": _DeviceQueue(max_gpu_runs)}
        self._warm_kept = max(max_cpu_runs, max_gpu_runs)  # ended runs' workers kept warm for the next runs
        self._job_workers: set[WorkerProcess] = set()  # workers running a job now (core.runs.worker's "job")
        self._spare: WorkerProcess | None = None
        self._closed = False
        self._wake = threading.Event()
        atexit.register(self.shutdown)
        self._replenish()
        threading.Thread(target=self._reap_idle_workers, name="worker-reaper", daemon=True).start()

    # -- commands ---------------------------------------------------------------------------------
    def start(self, config: RunConfig, owner: str = "", phases: tuple[Phase, ...] | None = None,
              tags: dict | None = None) -> str:
        """Queue a run; returns its id at once. Problems found later (data, memory) end it as "failed". `tags`
        (core.runs.store.RUN_TAGS: a sweep's id and trial number) are stored with its record."""
        self._last_activity = time.monotonic()
        phases = tuple(phases or (Phase(config.epochs, config.lr),))
        config = config.replace(epochs=phases[0].epochs, lr=phases[0].lr)
        run_id = os.urandom(6).hex()
        layers = layer_rows(config, math.prod(IMAGE_SHAPES[config.dataset]), len(CLASS_NAMES[config.dataset]))
        try:  # the page names the device and the model while the run waits for its turn
            device = device_label(resolve_device(config.device))
        except DeviceError:
            device = ""
        live = _LiveRun(self._live, run_id)
        live.pending = list(phases)
        live.tags = dict(tags or {})
        self._live.add(live, RunSnapshot(run_id, owner, config, RunStatus.QUEUED,
                                         planned_epochs=sum(p.epochs for p in phases),
                                         store_warning=self.store_warning, cpu_threads=self.cpu_threads,
                                         device=device, layers=tuple(layers),
                                         parameters=sum(r.parameters for r in layers)))
        self._launch(live, ("start", run_id, config.to_dict(), [(p.epochs, p.lr) for p in phases], live.tags))
        return run_id

    def continue_run(self, run_id: str, epochs: int, lr: float, owner: str = "") -> None:
        """Train a finished or stopped run further; a run known only from the store resumes from its checkpoint.
        The session that continues it (`owner`) is the one that may stop it without a confirmation."""
        phase = Phase(epochs, lr)
        self._last_activity = time.monotonic()
        live = self._live.entry(run_id)
        if live is None:
            stored = self._stored_snapshot(run_id)
            if stored is None:
                raise KeyError(f"no run {run_id}")
            live = self._live.add(_LiveRun(self._live, run_id),
                                  replace(stored, live=True, cpu_threads=self.cpu_threads))
        snap = live.snapshot
        if not snap.can_continue or self._live.driving(run_id):
            raise RuntimeError(f"run {run_id} cannot be continued now (status {snap.status})")
        live.pending = [phase]
        live.update(status=RunStatus.QUEUED, message="", planned_epochs=len(snap.epochs) + epochs, progress=None,
                    owner=owner or snap.owner)
        message = ("continue", epochs, lr) if live.worker is not None and live.worker.alive() else \
            ("resume", run_id, [(epochs, lr)])
        self._launch(live, message)

    def stop(self, run_id: str, status: str = RunStatus.STOPPED, reason: str = "") -> None:
        """Stop a run within a batch. A sweep prunes a trial with status "pruned" and its reason; a run still
        queued or loading ends "stopped" whatever the status asked."""
        live = self._live.entry(run_id)
        if live is not None:
            live.stop_requested.set()
            if live.worker is not None and live.snapshot.active:
                live.worker.stop(status, reason)

    def snapshot(self, run_id: str) -> RunSnapshot | None:
        live = self._live.entry(run_id)
        if live is not None:
            snap = live.snapshot
            if snap.status == RunStatus.QUEUED and live.turn is not None:
                snap = replace(snap, queue_ahead=live.turn.ahead())
            return snap
        return self._stored_snapshot(run_id)

    def is_active(self, run_id: str) -> bool:
        """Whether this manager trains the run or has it queued (the store may still say "finished")."""
        return self._live.is_active(run_id)

    def active_runs(self) -> list[RunSnapshot]:
        return self._live.active()

    def runs_at_once(self, device_type: str) -> int:
        """How many runs this manager trains at once on a device type ('cpu', 'cuda', 'mps')."""
        return self._queues[device_type].capacity

    def worker_starting(self) -> bool:
        """Whether a spare worker is still importing torch and reading data (CPU that timed work would feel)."""
        with self._lock:
            spare = self._spare
            return spare is not None and spare.alive() and not spare.wait_ready(0)

    def wait(self, run_id: str, timeout: float | None = None) -> RunSnapshot | None:
        """Until the run has ended and its thread has let go of the device and the worker, or `timeout`."""
        self._live.wait(run_id, timeout)
        return self.snapshot(run_id)

    def wait_for_epoch(self, run_id: str, epochs_seen: int, timeout: float) -> RunSnapshot | None:
        """The run's snapshot as soon as it has more than `epochs_seen` epochs or has ended, else after `timeout`
        seconds: a page that expects an epoch to end within a moment draws it the moment it does."""
        if self._live.entry(run_id) is None:
            return self.snapshot(run_id)
        self._live.wait_until(run_id, lambda snap: len(snap.epochs) > epochs_seen, timeout)
        return self.snapshot(run_id)

    # -- jobs: other timed work on a worker, in the same device queues (speedup maps) ------------------
    def queue_job(self, devices) -> DeviceTurn:
        """A place for a job in the queues of `devices`, taken now: runs and jobs get a device in the order they
        asked for it, so a job waits for the runs queued before it, and runs queued after it wait for the job."""
        if self._closed:
            raise RuntimeError("the run manager is shut down")
        self._last_activity = time.monotonic()
        return self._turn(devices)

    def run_job(self, turn: DeviceTurn, target: str, kwargs: dict, on_message, stop: threading.Event,
                on_wait=None, on_start=None, give_up=None) -> str:
        """When the turn comes, run `target` ('module:function', see core.runs.worker) in a worker process and
        pass each of its messages to on_message(kind, *body), up to and including ("job_done", value) or
        ("error", message). While it waits, on_wait(runs and jobs ahead) is called every 0.2 s; once the job is
        sent, on_start(worker) (worker.stop() cancels it). A job that cannot stop by itself can be cut off:
        once give_up() is true (asked every 0.5 s) its worker is ended. Returns '' when the job has answered,
        RunStatus.STOPPED when `stop` was set before it started, 'given up', else how its worker died."""
        if not self._wait_turn(turn, stop, on_wait):
            return RunStatus.STOPPED
        worker, answered = None, False
        try:
            if stop.is_set() or self._closed:
                return RunStatus.STOPPED
            self._last_activity = time.monotonic()
            worker = self._take_worker()
            with self._lock:
                self._job_workers.add(worker)
            if not worker.wait_ready(READY_TIMEOUT_S):
                raise RuntimeError("the training process did not start")
            worker.send("job", target, kwargs)
            if on_start is not None:
                on_start(worker)
            memory: dict = {}
            for kind, *body in self._messages(worker, memory, give_up):
                answered = kind in ("job_done", "error")
                on_message(kind, *body)
                if answered:
                    return ""
            if give_up is not None and worker.alive() and give_up():
                worker.process.kill()
                return "given up"
            return self._death_message(worker, memory)
        finally:
            turn.release()
            if worker is not None:
                self._give_back(worker, keep=answered)
            self._after_run()

    def _give_back(self, worker: WorkerProcess, keep: bool) -> None:
        """A job's worker once the job has ended: kept warm as the spare when there is none, else closed."""
        with self._lock:
            self._job_workers.discard(worker)
            if keep and worker.alive() and not self._closed and self._spare is None:
                self._spare, worker = worker, None
        if worker is not None:
            threading.Thread(target=worker.close, daemon=True).start()

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop every run between batches, record cut-off runs as interrupted, and end the workers."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        runs = self._live.entries()
        for live in runs:  # training ones end as interrupted, keeping their last finished epoch's weights
            live.stop_requested.set()
            if live.worker is not None and live.snapshot.active:
                live.worker.send("interrupt", SHUTDOWN_REASON)
        with self._lock:
            job_workers = list(self._job_workers)
        for worker in job_workers:  # a job (a map) stops within a step and answers with what it has
            try:
                worker.send("interrupt", SHUTDOWN_REASON)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        self._live.join_all(timeout)
        workers = [live.worker for live in runs if live.worker is not None] + ([self._spare] if self._spare else [])
        workers += [worker for worker in job_workers if worker not in workers]
        for worker in workers:  # all asked at once, then awaited: a server's stop waits for the slowest, not the sum
            worker.begin_close()
        for worker in workers:
            worker.finish_close(timeout=max(0.1, deadline - time.monotonic()))

    # -- the per-run thread -----------------------------------------------------------------------
    def _launch(self, live: _LiveRun, message: tuple) -> None:
        if self._closed:
            raise RuntimeError("the run manager is shut down")
        live.stop_requested.clear()
        try:  # the place in the queue is taken here, in the caller's order, not when the thread runs
            device = resolve_device(live.snapshot.config.device).type
        except DeviceError as exc:
            live.update(status=RunStatus.FAILED, message=str(exc))
            self._live.forget_thread(live.key)
            self._record_unstarted_failure(live)
            return
        live.turn = self._turn([device])
        self._live.drive(live.key, self._drive, live, message, live.turn, name=f"run-{live.key}")

    def _turn(self, devices) -> DeviceTurn:
        return DeviceTurn([self._queues[d] for d in DEVICE_ORDER if d in set(devices)])

    def _wait_turn(self, turn: DeviceTurn, stop: threading.Event, on_wait=None) -> bool:
        """Wait for the turn, honouring Stop: False (and the places left) if stop was set first."""
        while not turn.acquire(timeout=0.2):
            if stop.is_set():
                turn.release()
                return False
            if on_wait is not None:
                on_wait(turn.ahead())
        return True

    def _drive(self, live: _LiveRun, message: tuple, turn: DeviceTurn) -> None:
        if not self._wait_turn(turn, live.stop_requested):  # queued: wait for the device, but honour Stop
            live.update(status=RunStatus.STOPPED, message="stopped while waiting in the queue")
            return
        try:
            if live.stop_requested.is_set():
                live.update(status=RunStatus.STOPPED, message="stopped before it started")
                return
            if live.worker is None or not live.worker.alive():
                live.update(status=RunStatus.LOADING)
                live.worker = self._take_worker()
                if message[0] == "continue":  # its worker went to another run meanwhile: reload from the store
                    message = ("resume", live.snapshot.run_id, [message[1:]])
            worker = live.worker
            if not worker.wait_ready(READY_TIMEOUT_S):
                raise RuntimeError("the training process did not start")
            worker.send(*message)
            if live.stop_requested.is_set() and self._closed:  # the server shut down while the worker started
                worker.send("interrupt", SHUTDOWN_REASON)
            elif live.stop_requested.is_set():  # Stop pressed while the worker was starting
                worker.stop()
            self._pump(live, worker)
        except Exception as exc:  # never let a run end silently: the UI shows the message
            live.update(status=RunStatus.FAILED, message=f"{type(exc).__name__}: {exc}", progress=None)
            self._record_unstarted_failure(live)
        finally:
            turn.release()
            live.ended_at = time.monotonic()
            self._after_run()

    def _messages(self, worker: WorkerProcess, memory: dict, give_up=None):
        """The worker's messages as they arrive; the iteration ends when the worker dies (memory: its last RSS
        sample, for death_message), or once give_up() is true."""
        memory.update(kills_before=oom_kills(), rss=None, sampled=0.0)
        while True:
            if time.monotonic() - memory["sampled"] >= RSS_SAMPLE_S:
                memory["rss"] = process_rss(worker.process.pid) or memory["rss"]
                memory["sampled"] = time.monotonic()
            if not worker.conn.poll(0.5):
                if not worker.alive() or (give_up is not None and give_up()):
                    return
                continue
            try:
                yield worker.conn.recv()
            except (EOFError, OSError):
                return

    def _pump(self, live: _LiveRun, worker: WorkerProcess) -> None:
        """Apply the worker's messages to the snapshot until the phase(s) end."""
        memory: dict = {}
        for kind, *body in self._messages(worker, memory):
            snap = live.snapshot
            if kind == "created":
                info = body[0]
                live.update(**{k: v for k, v in info.items() if k != "store_warning"},
                            store_warning=info["store_warning"] or snap.store_warning)
            elif kind == "phase":
                epochs, lr = body
                live.update(status=RunStatus.RUNNING, schedule=snap.schedule + (Phase(epochs, lr),),
                            planned_epochs=len(snap.epochs) + sum(p.epochs for p in live.pending))
                if live.pending:
                    live.pending.pop(0)
            elif kind == "epoch":
                live.update(epochs=snap.epochs + (body[0],))
            elif kind == "progress":
                live.update(progress=body[0], batch_losses=with_batch_loss(snap.batch_losses, body[0]))
            elif kind == "telemetry":
                live.update(telemetry=body[0])
            elif kind == "store":  # '' once the worker caught up with a store that failed
                live.update(store_warning=body[0] or self.store_warning)
            elif kind == "done":
                status, message, test_acc, store_warning = body
                live.update(status=status, message=message, test_acc=test_acc, progress=None,
                            store_warning=store_warning or snap.store_warning, planned_epochs=len(snap.epochs))
                return
            elif kind == "error":
                live.update(status=RunStatus.FAILED, message=body[0], progress=None)
                return
        self._worker_died(live, worker, memory)

    @staticmethod
    def _death_message(worker: WorkerProcess, memory: dict) -> str:
        """How a worker ended: 'the training process was killed by SIGKILL (...)', or its exit code."""
        try:
            code = worker.process.wait(timeout=5)  # the pipe closes just before the process is reaped
        except Exception:
            code = worker.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}"
            if -code == signal.SIGKILL:
                how += f" ({oom_verdict(memory['rss'], memory['kills_before'])})"
        else:
            how = f"exited unexpectedly with code {code}"
        return f"the training process {how}"

    def _worker_died(self, live: _LiveRun, worker: WorkerProcess, memory: dict) -> None:
        message = self._death_message(worker, memory)
        live.worker = None
        run_id = live.snapshot.run_id
        problem = self._mark_interrupted(run_id, message)
        stored = self._stored_snapshot(run_id)
        if stored is not None and not problem and stored.status not in ACTIVE:
            # the store's status is the run's: what History shows and what Continue checks
            live.update(status=stored.status, message=stored.message, epochs=stored.epochs, progress=None,
                        test_acc=stored.test_acc, planned_epochs=len(stored.epochs))
        else:
            live.update(status=RunStatus.INTERRUPTED, message=message, progress=None,
                        planned_epochs=len(live.snapshot.epochs))
        if problem:
            live.update(store_warning=problem)

    def _record_unstarted_failure(self, live: _LiveRun) -> None:
        """A run that failed before a worker recorded it (no device, no worker) still belongs in the history;
        a stored run whose continuation could not start keeps its stored status."""
        if self.store is None:
            return
        snap = live.snapshot
        try:
            self.store.get_run(snap.run_id)
            return
        except KeyError:
            pass
        except StoreError as exc:
            live.update(store_warning=f"This failed run is NOT saved: {exc}")
            return
        try:
            self.store.create_run(snap.config.to_dict(), device=snap.device or snap.config.device, data_source="",
                                  torch_version="", parameters=snap.parameters or None, origin="dashboard",
                                  run_id=snap.run_id, tags=live.tags)
            self.store.finish_run(snap.run_id, RunStatus.FAILED, snap.message)
        except StoreError as exc:
            live.update(store_warning=f"This failed run is NOT saved: {exc}")

    def _mark_interrupted(self, run_id: str, message: str) -> str:
        """Record a run whose worker died as interrupted, unless the worker recorded its end first; returns a
        warning for the page if that cannot be written."""
        if self.store is None:
            return ""
        try:
            if self.store.get_run(run_id)["status"] == RunStatus.RUNNING:
                self.store.finish_run(run_id, RunStatus.INTERRUPTED, message)
        except KeyError:
            return ""
        except StoreError as exc:
            return f"This run's end is NOT saved (the history may still call it running): {exc}"
        return ""

    # -- worker pool ------------------------------------------------------------------------------
    def _new_worker(self) -> WorkerProcess:
        db = str(self.store.path) if self.store is not None else None
        return WorkerProcess(self.data_dir, db, self.cpu_threads, self.preload)

    def _take_worker(self) -> WorkerProcess:
        """A warm spare if one is ready; else the warm worker of the longest-ended run (that run can still be
        continued: it resumes from its stored checkpoint); else a new worker."""
        with self._lock:
            if self._spare is not None and self._spare.alive() and self._spare.wait_ready(0):
                worker, self._spare = self._spare, None
                return worker
            if self.store is not None:
                idle = sorted((r for r in self._live.entries() if r.worker is not None and r.worker.alive()
                               and not r.snapshot.active and self._live.thread(r.key) is not None
                               and not self._live.driving(r.key)),
                              key=lambda r: r.ended_at)
                if idle:
                    worker, idle[0].worker = idle[0].worker, None
                    return worker
            worker, self._spare = self._spare, None
        if worker is None or not worker.alive():
            worker = self._new_worker()
        return worker

    def warm_up(self) -> None:
        """Have one worker warm (a page that may start a run soon calls this: it costs nothing when one is)."""
        self._last_activity = time.monotonic()
        self._replenish()

    def idle_workers(self) -> list[WorkerProcess]:
        """Live worker processes that train nothing now: the spare and ended runs' workers."""
        with self._lock:
            kept = [r.worker for r in self._live.entries() if r.worker is not None and not r.snapshot.active
                    and r.worker.alive()]
            return kept + ([self._spare] if self._spare is not None and self._spare.alive() else [])

    def _replenish(self) -> None:
        """Keep one warm worker, started only while nothing trains (spawning costs CPU seconds). The most recently
        ended run's worker counts: it serves that run's Continue at once, or the next run."""
        with self._lock:
            if self._closed or self._spare is not None or self._job_workers or \
                    any(r.snapshot.active for r in self._live.entries()):
                return
            if any(r.worker is not None and r.worker.alive() for r in self._live.entries()):
                return
            self._spare = self._new_worker()

    def _after_run(self) -> None:
        """One warm worker at most (one per run a device may train at once): the ended run's own; older ended runs'
        workers and the spare are closed (each holds ~0.9 GB on full MNIST; those runs continue from their stored
        checkpoints)."""
        self._last_activity = time.monotonic()
        with self._lock:
            idle = sorted((r for r in self._live.entries() if r.worker is not None and not r.snapshot.active),
                          key=lambda r: r.ended_at)
            closing = []
            for live in idle[:-self._warm_kept]:
                live.worker, worker = None, live.worker
                closing.append(worker)
            if idle and self._spare is not None:
                closing.append(self._spare)
                self._spare = None
        for worker in closing:
            threading.Thread(target=worker.close, daemon=True).start()
        self._replenish()

    def _reap_idle_workers(self) -> None:
        """Close every idle worker once nothing has started or ended for idle_reap_s (a page's warm_up() brings
        one back)."""
        while not self._wake.wait(min(REAP_CHECK_S, self.idle_reap_s / 2)):
            if time.monotonic() - self._last_activity < self.idle_reap_s:
                continue
            with self._lock:
                if any(r.snapshot.active for r in self._live.entries()):
                    continue
                closing = [r.worker for r in self._live.entries() if r.worker is not None]
                for live in self._live.entries():
                    live.worker = None
                if self._spare is not None:
                    closing.append(self._spare)
                    self._spare = None
            for worker in closing:
                worker.close()

    # -- the store --------------------------------------------------------------------------------
    def _stored_snapshot(self, run_id: str) -> RunSnapshot | None:
        if self.store is None:
            return None
        try:
            row = self.store.get_run(run_id)
            records = self.store.epochs(run_id)
        except (KeyError, StoreError):
            return None
        config, phases = stored_run(row, records)  # ConfigError: a row this version cannot open (the page says so)
        epochs = tuple(EpochResult(**e, device=row["device"]) for e in records)
        return RunSnapshot(run_id, "", config, row["status"], row["message"], epochs,
                           planned_epochs=len(epochs), schedule=phases,
                           device=row["device"], parameters=row["parameters"] or 0, test_acc=row["test_acc"],
                           data_title=row["dataset"], started_at=row["created_at"], live=False)
