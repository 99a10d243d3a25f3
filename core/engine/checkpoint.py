"""A run's checkpoint: the bytes the store keeps so that a run can be continued, evaluated or exported.

This module alone knows the format. It is torch.save of one dict:

    config           RunConfig.to_dict()
    model            the MLP's state_dict
    optimizer        the optimizer's state_dict (momentum buffers, Adam moments; {} for plain SGD)
    epochs_done      epochs these weights have trained
    phases_done      phases (fit calls) started
    elapsed          wall seconds of training so far
    batch_generator  state of the CPU generator that orders the next epoch's batches

with every tensor on the CPU. Bytes are always read with torch.load(weights_only=True): tensors and
plain containers only, so damaged or foreign bytes cannot run code. Checkpoints saved by earlier
versions have the same keys and load unchanged.
"""
from __future__ import annotations

import io
import logging

import torch

from ..config import ConfigError, ModelLoadError, RunConfig
from .step import TrainStep

TRAINING_STATE = ("optimizer", "epochs_done", "phases_done", "elapsed", "batch_generator")
# The optimizer state each optimizer needs to continue exactly (optim.*.state_dict keys).
_OPTIMIZER_KEYS = {"sgd": set(), "sgd_momentum": {"buffers"}, "adam": {"steps", "exp_avg", "exp_avg_sq"}}

log = logging.getLogger(__name__)


def make(config: RunConfig, model_state: dict, optimizer_state: dict, *, epochs_done: int, phases_done: int,
         elapsed: float, batch_generator: torch.Tensor, copy: bool = False) -> dict:
    """A checkpoint as a dict of CPU tensors; copy=True clones tensors already on the CPU too, so training can
    go on while the dict keeps this moment (a memory copy costs far less than serializing)."""
    return {"config": config.to_dict(), "model": {k: _to_cpu(v, copy) for k, v in model_state.items()},
            "optimizer": _to_cpu(optimizer_state, copy), "epochs_done": int(epochs_done),
            "phases_done": int(phases_done), "elapsed": float(elapsed), "batch_generator": batch_generator}


def of_step(config: RunConfig, step: TrainStep, batch_generator: torch.Generator, *, epochs_done: int,
            phases_done: int, elapsed: float, copy: bool = False) -> dict:
    """The checkpoint of a training step's weights and optimizer, with the batch order and counters."""
    return make(config, step.model.state_dict(), step.optimizer.state_dict(), epochs_done=epochs_done,
                phases_done=phases_done, elapsed=elapsed, batch_generator=batch_generator.get_state(), copy=copy)


def to_bytes(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def from_bytes(blob: bytes) -> dict:
    """The checkpoint dict (tensors on the CPU); torch's own error for bytes that are not one."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def restore(blob: bytes, step: TrainStep, batch_generator: torch.Generator) -> tuple[int, int, float]:
    """Load a checkpoint's weights and optimizer state into step (on its device) and its batch order into
    batch_generator; returns (epochs_done, phases_done, elapsed)."""
    checkpoint = from_bytes(blob)
    step.model.load_state_dict(checkpoint["model"])
    device = step.params[0].device
    step.optimizer.load_state_dict(_to_device(checkpoint["optimizer"], device))
    batch_generator.set_state(checkpoint["batch_generator"])
    return checkpoint["epochs_done"], checkpoint["phases_done"], checkpoint["elapsed"]


def is_checkpoint(payload) -> bool:
    """Whether a loaded dict is a checkpoint (a weights file has 'state_dict' where a checkpoint has 'model')."""
    return isinstance(payload, dict) and "model" in payload and "config" in payload and "state_dict" not in payload


def parts(checkpoint: dict) -> tuple[dict, dict, dict]:
    """(config as a dict, model state_dict, training state: the TRAINING_STATE entries it has)."""
    return (checkpoint["config"], checkpoint["model"],
            {k: checkpoint[k] for k in TRAINING_STATE if k in checkpoint})


def read_weights(blob: bytes) -> tuple[RunConfig, dict, dict]:
    """Stored checkpoint bytes -> (config, state_dict, the rest of its training state); ModelLoadError with a
    plain sentence when they are damaged or their config is invalid."""
    try:
        config, weights, rest = parts(from_bytes(blob))
        config = RunConfig.from_dict(config)
    except ConfigError as exc:
        raise ModelLoadError(f"the stored checkpoint's config is invalid: {exc}") from None
    except Exception as exc:  # truncated or foreign bytes: pickle, zip and key errors alike
        log.warning("a stored checkpoint could not be read: %s: %s", type(exc).__name__, exc)
        raise ModelLoadError("the stored weights are damaged and cannot be read (details in the server log)") from None
    return config, weights, rest


def optimizer_state_fits(optimizer: str, state) -> bool:
    """Whether an optimizer state (e.g. from an uploaded file) has what `optimizer` needs to continue."""
    return isinstance(state, dict) and _OPTIMIZER_KEYS[optimizer] <= set(state)


def _to_cpu(obj, copy: bool = False):
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)  # .cpu() of a CPU tensor is the tensor itself
    if isinstance(obj, dict):
        return {k: _to_cpu(v, copy) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v, copy) for v in obj]
    return obj


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj
