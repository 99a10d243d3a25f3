"""Sweeps without worker processes: a TrialExecutor that records made-up epochs as runs in a real store."""
from __future__ import annotations

import math
import threading

from core.config import RunStatus
from core.engine.train import EpochResult
from core.runs.store import Store
from core.studies.sweep import TrialOutcome


class StoreOnlyManager:
    """What Sweeps needs of a RunManager when trials do not train: the store."""

    def __init__(self, db_path):
        self.store = Store(db_path)
        self.store_warning = ""

    def stop(self, run_id: str) -> None:
        pass


def made_up_accuracy(config, epoch: int) -> float:
    """Validation accuracy as a smooth function of the settings: best near lr 0.1 and wide layers."""
    closeness = 1 - min(1.0, abs(math.log10(config.lr) + 1) / 3)
    width = math.log2(config.hidden_sizes[0]) / 10
    return min(0.99, 0.3 + 0.4 * closeness + 0.2 * width + 0.02 * epoch)


class FakeExecutor:
    """Records each trial as a run with made-up epochs; `hold` (a trial number) waits at its first epoch until
    `release` is set or the sweep stops, so a test can stop a sweep mid-trial."""

    parallel = 1

    def __init__(self, store: Store, hold: int | None = None):
        self.store = store
        self.hold = hold
        self.holding = threading.Event()
        self.release = threading.Event()
        self.requests = []

    def prepare(self, stop) -> None:
        pass

    def run_trial(self, request, on_status, on_epoch, stop) -> TrialOutcome:
        self.requests.append(request)
        config = request.config
        run_id = self.store.create_run(config.to_dict(), device="CPU: fake", data_source="", torch_version="",
                                       parameters=0, tags=request.tags)
        on_status(run_id, RunStatus.RUNNING)
        epochs, status, message = [], RunStatus.FINISHED, ""
        for i in range(1, config.epochs + 1):
            if request.number == self.hold and i == 2:
                self.holding.set()
                while not (self.release.is_set() or stop.is_set()):
                    stop.wait(0.01)
            if stop.is_set():
                status, message = RunStatus.STOPPED, f"stopped during epoch {i}"
                break
            acc = made_up_accuracy(config, i)
            epoch = EpochResult(i, 0, config.lr, 1 - acc, 1 - acc, acc, 0.01, 1000.0, i == 1, 0.01 * i, "CPU: fake")
            self.store.add_epoch(run_id, epoch.to_dict())
            epochs.append(epoch)
            reason = on_epoch(epoch)
            if reason:
                status, message = RunStatus.PRUNED, reason
                break
        self.store.finish_run(run_id, status, message)
        return TrialOutcome(run_id, status, tuple(epochs), message)
