"""The stored runs the CSV and weights-file tests export: two real runs on the MNIST sample."""
from __future__ import annotations

from core.config import Phase
from core.runs.store import Store
from core.runs.training_run import TrainingRun
from history_helpers import SMALL


def stored_runs(db_path, sample):
    """(store, first, second): momentum SGD over two phases (3 epochs), then Adam on a wider model (2 epochs)."""
    store = Store(db_path)
    first = TrainingRun(SMALL.replace(optimizer="sgd_momentum", momentum=0.8), store=store, dataset=sample)
    first.run_schedule([Phase(2, 0.2), Phase(1, 0.05)])
    second = TrainingRun(SMALL.replace(optimizer="adam", lr=0.01, hidden_sizes=(20, 20)), store=store, dataset=sample)
    second.run_schedule([Phase(2, 0.01)])
    return store, first, second
