"""A training worker process: one run per process, driven over a socket pair.

Training in the UI's own process shares its GIL: every torch op hands the GIL back and forth with
the page's Python, and epochs ran 2-4x slower with a browser attached. A worker process trains
at full speed, and a crash or an out-of-memory kill takes down only the worker, never the server.
Workers start as `python -m core.runs.worker` (not multiprocessing's spawn, which would re-run the
Streamlit script that is __main__ in the server).

To the worker: ("start", run_id, config_dict, [(epochs, lr), ...][, tags]), ("resume", run_id, [(epochs, lr)]),
("continue", epochs, lr), ("job", "module:function", kwargs), ("stop",), ("stop", status, reason) (end as "pruned":
a sweep's pruner) and ("interrupt", reason) (checked every batch or step), ("close",).
From the worker: ("ready",), ("created", info), ("phase", epochs, lr), ("epoch", EpochResult),
("progress", BatchProgress), ("telemetry", TelemetrySample) (about once a second while training, from the
run's sampler thread: core.runs.telemetry), ("store", store_warning) (whenever it changes; '' once all is saved),
("done", status, message, test_acc, store_warning), ("error", message).

A job is other timed work that must not share the machine with a run (a speedup map): the worker calls
function(link, data_dir=..., **kwargs), where `link` sends the job's own progress messages and is its
cancel token (set by "stop"), and answers ("job_done", what it returned). The job names its code, so this
module imports nothing from the studies above it.

A worker whose server is gone (killed: its end of the socket closes) interrupts its run between
batches, records it as interrupted with the weights of its last finished epoch, and exits, so the
run can be continued after a restart.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

from ..config import PROJECT_ROOT, DataError, DeviceError, Phase, RunConfig, RunStatus, StoreError, TrainingError
from ..engine.data import load_dataset
from ..engine.devices import set_cpu_threads
from .store import Store

EXPECTED_ERRORS = (TrainingError, DataError, DeviceError, StoreError)


SERVER_GONE = "the dashboard server ended during the run (its connection closed)"


class PipeCancel:
    """The Trainer's cancel token and the worker's line to the server: set once a message arrives while training
    (polled at most every 20 ms), or once the server is gone, which interrupts the run (on_end_as)."""

    POLL_INTERVAL_S = 0.02  # Connection.poll builds a selector per call (~10 us): not every batch

    def __init__(self, conn: Connection):
        self.conn = conn
        self.flag = False
        self.lost = False
        self.inbox: list[tuple] = []
        self.last_poll = 0.0
        self.on_end_as = lambda status, reason: None  # the current run's end_as()
        self._send_lock = threading.Lock()  # the telemetry thread sends too, and Connection.send is not thread-safe

    def is_set(self) -> bool:
        if self.flag:
            return True
        now = time.perf_counter()
        if now - self.last_poll < self.POLL_INTERVAL_S:
            return False
        self.last_poll = now
        try:
            message = self.conn.recv() if self.conn.poll() else None
        except (EOFError, OSError):
            self._lose()
            return True
        if message is not None:
            self.flag = True  # "stop", "interrupt", or "close" (kept in the inbox to act on after the phase)
            if message[0] == "interrupt":
                self.on_end_as(RunStatus.INTERRUPTED, message[1])
            elif message[0] == "stop" and len(message) > 1:
                self.on_end_as(*message[1:])
            elif message[0] != "stop":
                self.inbox.append(message)
        return self.flag

    def set(self) -> None:
        self.flag = True

    def clear(self) -> None:
        self.flag = False

    def send(self, *message) -> None:
        """Send to the server; once it is gone, nothing is sent and the run is interrupted."""
        if self.lost:
            return
        try:
            with self._send_lock:
                self.conn.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError
            self._lose()

    def _lose(self) -> None:
        self.lost = self.flag = True
        self.on_end_as(RunStatus.INTERRUPTED, SERVER_GONE)

    def next_message(self) -> tuple:
        if self.inbox:
            return self.inbox.pop(0)
        if self.lost:
            raise EOFError
        return self.conn.recv()


def serve(conn: Connection, data_dir, db_path, threads: int, preload: str | None) -> None:
    set_cpu_threads(threads)
    if preload:
        try:
            load_dataset(preload, data_dir)
        except DataError:
            pass  # reported when a run asks for the data
    store, store_problem = _open_store(db_path)
    cancel = PipeCancel(conn)
    cancel.send("ready")
    run = None

    def end_as(status: str, reason: str) -> None:
        if run is not None:
            run.end_as(status, reason)

    def on_store_warning(warning: str) -> None:
        cancel.send("store", warning)

    def on_telemetry(sample) -> None:
        cancel.send("telemetry", sample)

    cancel.on_end_as = end_as
    while True:
        try:
            message = cancel.next_message()
        except (EOFError, OSError):  # the server is gone
            return
        kind = message[0]
        if kind == "close":
            return
        if kind in ("stop", "interrupt"):
            continue  # arrived after the phase had ended
        cancel.clear()
        try:
            if kind == "job":
                run = None  # the run this worker trained before goes on elsewhere, from the store
                _, target, kwargs = message
                cancel.send("job_done", _job_function(target)(cancel, data_dir=data_dir, **kwargs))
                continue
            if kind in ("start", "resume"):
                from .training_run import TrainingRun

                if store is None:  # the database may have become usable since (space freed, permissions fixed)
                    store, store_problem = _open_store(db_path)
                if kind == "start":
                    _, run_id, config, phases, *tags = message  # tags: optional (its sweep and trial)
                    run = None
                    run = TrainingRun(RunConfig.from_dict(config), store=store, data_dir=data_dir, cancel=cancel,
                                      origin="dashboard", run_id=run_id, on_store_warning=on_store_warning,
                                      on_telemetry=on_telemetry, tags=tags[0] if tags else None)
                    if store_problem:
                        run.report_store_problem(f"This run is NOT saved: {store_problem}")
                else:
                    _, run_id, phases = message
                    if store is None:
                        raise StoreError(store_problem or "run history is off, so stored runs cannot be resumed")
                    run = None
                    run = TrainingRun.resume(run_id, store, data_dir=data_dir, cancel=cancel)
                    run.on_store_warning = on_store_warning
                    run.on_telemetry = on_telemetry
                cancel.send("created", _describe(run))
            else:
                _, epochs, lr = message
                phases = [(epochs, lr)]
            _train(cancel, run, [Phase(e, lr) for e, lr in phases])
        except EXPECTED_ERRORS as exc:
            if kind == "start" and store_problem:
                cancel.send("store", f"This failed run is NOT saved: {store_problem}")
            cancel.send("error", str(exc))
        except Exception as exc:
            traceback.print_exc()
            cancel.send("error", f"unexpected error: {type(exc).__name__}: {exc}")


def _job_function(target: str):
    """'core.studies.speedup_map:map_job' -> that function (only the project's own code)."""
    module, _, name = target.partition(":")
    if not module.startswith("core.") or not name:
        raise ValueError(f"not a job of this project: {target!r}")
    return getattr(importlib.import_module(module), name)


def _open_store(db_path) -> tuple[Store | None, str]:
    """The run database, or None and why not (said on the page of every run this worker trains)."""
    if not db_path:
        return None, ""
    try:
        return Store(db_path), ""
    except StoreError as exc:
        return None, str(exc)


def _describe(run) -> dict:
    trainer = run.trainer
    info = {"device": trainer.device_label, "layers": tuple(trainer.summary), "parameters": trainer.parameter_count,
            "n_train": trainer.n_train, "n_val": trainer.n_val, "data_title": run.dataset.title,
            "data_note": run.dataset.note, "epochs": tuple(run.epochs), "store_warning": run.store_warning}
    if run.resume_note:
        info["message"] = run.resume_note
    return info


def _train(link: PipeCancel, run, phases: list[Phase]) -> None:
    for phase in phases:
        link.send("phase", phase.epochs, phase.lr)
        run.train_phase(phase.epochs, phase.lr, on_epoch=lambda e: link.send("epoch", e),
                        on_progress=lambda p: link.send("progress", p))
        if run.status != RunStatus.FINISHED:
            break
    link.send("done", run.status, run.message, run.test_acc, run.store_warning)


class WorkerProcess:
    """The server's handle on one worker process and its connection."""

    def __init__(self, data_dir, db_path, threads: int, preload: str | None):
        ours, theirs = socket.socketpair()
        command = [sys.executable, "-m", "core.runs.worker", "--fd", str(theirs.fileno()), "--threads", str(threads)]
        if data_dir:
            command += ["--data-dir", str(data_dir)]
        if db_path:
            command += ["--db", str(db_path)]
        if preload:
            command += ["--preload", preload]
        # Own process group: a Ctrl-C in the terminal reaches the server, which stops workers in order.
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, pass_fds=[theirs.fileno()], start_new_session=True)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False

    def wait_ready(self, timeout: float | None = None) -> bool:
        try:
            if not self.ready and self.conn.poll(timeout):
                self.ready = self.conn.recv() == ("ready",)
        except (EOFError, OSError):  # the process died while starting
            return False
        return self.ready

    def send(self, *message) -> None:
        self.conn.send(message)

    def stop(self, status: str = RunStatus.STOPPED, reason: str = "") -> None:
        """Stop the run within a batch; as `status` "pruned" (with its reason) when a sweep's pruner asks."""
        try:
            self.conn.send(("stop",) if status == RunStatus.STOPPED else ("stop", status, reason))
        except OSError:
            pass

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def close(self, timeout: float = 5.0) -> None:
        self.begin_close()
        self.finish_close(timeout)

    def begin_close(self) -> None:
        """Ask the process to exit; finish_close waits for it (the manager asks all its workers first)."""
        if not self.wait_ready(0):  # still importing torch or reading data: it holds nothing yet
            self.process.terminate()
        try:
            self.conn.send(("close",))
        except OSError:
            pass

    def finish_close(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(2)
        self.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="training worker (started by core.runs.manager)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--data-dir")
    parser.add_argument("--db")
    parser.add_argument("--preload")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = Connection(os.dup(args.fd))
    os.close(args.fd)
    serve(conn, args.data_dir, args.db, args.threads, args.preload)
    # Every write is committed and every file closed by now. Skip the interpreter's teardown of torch: it took
    # 1.1-1.4 s per worker on a busy 2-core machine, and a server stopping three workers waited for each.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
