"""A stored run's model: the weights its checkpoint kept, with the config they fit."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import ModelLoadError, RunConfig
from ..engine import checkpoint
from ..engine.evaluate import build_model
from .store import Store


@dataclass(frozen=True)
class LoadedModel:
    config: RunConfig
    state_dict: dict
    epochs_done: int | None  # the epoch these weights are from, when known
    training_state: dict  # optimizer, batch order... (empty when unknown)

    def model(self) -> nn.Sequential:
        return build_model(self.config, self.state_dict)


def load_run_model(store: Store, run_id: str) -> LoadedModel:
    """The weights a run kept (saved when each of its phases ended); ModelLoadError when it kept none."""
    blob = store.load_checkpoint(run_id)
    if blob is None:
        raise ModelLoadError(f"run {run_id} kept no weights: a run saves them when a phase finishes or is stopped")
    config, weights, rest = checkpoint.read_weights(blob)
    build_model(config, weights)  # check the shapes now, with a clear message
    return LoadedModel(config, weights, rest.get("epochs_done"), rest)
