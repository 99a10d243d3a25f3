"""Weights files: a run's weights, config and history taken away as one file, and brought back as a run.

A weights file is a torch.save'd dict {"format", "version", "config", "state_dict", "run", "epochs",
"training_state"}, read back with weights_only=True (no pickled code runs on upload). A file whose weights do not
fit its config, or that is not such a file at all, raises WeightsFileError with one plain sentence. A run's own
checkpoint (core.engine.checkpoint) saved as a file loads too.
"""
from __future__ import annotations

import io
import logging
import math
import pickle
import zipfile
from dataclasses import dataclass, field

import torch

from ..config import ConfigError, ModelLoadError, RunConfig, RunStatus, WeightsFileError, short_repr
from ..engine import checkpoint
from ..engine.evaluate import build_model, layer_layout
from ..engine.step import TrainStep
from ..runs.models import load_run_model
from ..runs.records import check_epochs, check_run_section, is_int, is_number
from ..runs.store import Store

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "mlp-training-lab/weights"
WEIGHTS_VERSION = 1
MAX_WEIGHTS_BYTES = 2 * 1024 ** 3


@dataclass(frozen=True)
class WeightsFile:
    config: RunConfig
    state_dict: dict
    run: dict = field(default_factory=dict)  # id, status, device, data_source, schedule, test_acc, created_at
    epochs: list[dict] = field(default_factory=list)  # the history up to these weights
    training_state: dict = field(default_factory=dict)  # optimizer, epochs_done, batch_generator...

    @property
    def parameters(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


def weights_bytes(weights: WeightsFile) -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "config": weights.config.to_dict(),
                "state_dict": {k: v.detach().cpu().contiguous() for k, v in weights.state_dict.items()},
                "run": weights.run, "epochs": weights.epochs, "training_state": weights.training_state}, buffer)
    return buffer.getvalue()


def run_weights(store: Store, run_id: str) -> WeightsFile:
    """A stored run's kept weights with its config and the epochs that led to them."""
    kept = load_run_model(store, run_id)
    row = store.get_run(run_id)
    done = kept.epochs_done
    epochs = [e for e in store.epochs(run_id) if done is None or e["epoch"] <= done]
    run = {k: row[k] for k in ("id", "status", "device", "data_source", "created_at", "test_acc", "test_loss")}
    run["schedule"] = row["schedule"]
    return WeightsFile(kept.config, kept.state_dict, run, epochs, kept.training_state)


def run_weights_bytes(store: Store, run_id: str) -> bytes:
    return weights_bytes(run_weights(store, run_id))


def weights_filename(weights_or_run) -> str:
    run = weights_or_run.run if isinstance(weights_or_run, WeightsFile) else weights_or_run
    config = weights_or_run.config if isinstance(weights_or_run, WeightsFile) else RunConfig.from_dict(run["config"])
    layers = "-".join(str(h) for h in config.hidden_sizes)
    return f"mlp-{config.dataset}-{layers}-{run.get('id', 'weights')}.pt"


def read_weights(data: bytes, name: str = "the file") -> WeightsFile:
    """Parse an uploaded weights file; WeightsFileError with a plain reason when it cannot be used."""
    if not data:
        raise WeightsFileError(f"{name} is empty")
    if len(data) > MAX_WEIGHTS_BYTES:
        raise WeightsFileError(f"{name} is {len(data) / 1024 ** 3:.1f} GiB, larger than any model this app trains")
    # torch's own errors for damaged files ("negative seek value -3212", "[enforce fail at
    # inline_container.cc:180]") mean nothing to a user: say what the file is in one sentence, log the rest.
    if data.startswith(b"\x80"):  # a pickle stream: plain pickle, or torch.save's pre-1.6 format
        raise WeightsFileError(f"{name} is a Python pickle, not a weights file saved by this app, so it was not "
                               f"loaded (nothing in it was run)")
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        raise WeightsFileError(f"{name} is not a PyTorch weights file (.pt saved by torch.save); "
                               f"download one from a run on the History page")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.namelist()
            bad_entry = archive.testzip()  # checks every entry's CRC: catches cut or overwritten bytes
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _unreadable(name, "is truncated or damaged (download it again)", exc) from None
    if not any(entry.endswith("/data.pkl") for entry in entries):
        raise WeightsFileError(f"{name} is a zip archive, but not a PyTorch weights file")
    if bad_entry is not None:
        raise _unreadable(name, "is damaged (download it again)", f"bad CRC in {bad_entry}")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain containers
        log.warning("refused to load %s: %s", name, _first_line(exc))
        raise WeightsFileError(f"{name} holds Python objects other than tensors and plain data, so it was not "
                               f"loaded (nothing in it was run); only weights files saved by this app "
                               f"can be loaded") from None
    except Exception as exc:  # a consistent archive whose records torch cannot use
        raise _unreadable(name, "is damaged or not a PyTorch weights file", exc) from None
    if not isinstance(payload, dict):
        raise WeightsFileError(f"{name} holds a {type(payload).__name__}, not this app's weights dict "
                               f"(with 'config' and 'state_dict')")
    if checkpoint.is_checkpoint(payload):  # a run's checkpoint saved as a file
        config, state_dict, training_state = checkpoint.parts(payload)
        payload = {"config": config, "state_dict": state_dict, "run": {}, "training_state": training_state}
    if "config" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise WeightsFileError(f"{name} is a bare state_dict without its config; download weights from the "
                                   f"History page, which stores the config alongside them")
        raise WeightsFileError(f"{name} has no 'config' entry: it was not saved by this app")
    if "state_dict" not in payload:
        raise WeightsFileError(f"{name} has no 'state_dict' entry: it was not saved by this app")
    version = payload.get("version", WEIGHTS_VERSION)
    if not isinstance(version, int) or version > WEIGHTS_VERSION:
        raise WeightsFileError(f"{name} is format version {version!r}; this app reads up to {WEIGHTS_VERSION}")
    # Everything below is stored and shown as a run: each part goes through the rules the app's own runs obey
    # (RunConfig, Phase), so an upload cannot add a run that later fails to open.
    try:
        config = RunConfig.from_dict(payload["config"])
    except ConfigError as exc:
        raise WeightsFileError(f"{name}: its config is invalid: {exc}") from None
    try:
        build_model(config, payload["state_dict"])
    except ModelLoadError as exc:
        log.warning("%s does not match its config: %s", name, exc)
        raise WeightsFileError(f"{name} has weights of the wrong shapes for its own {layer_layout(config)} model "
                               f"(details in the server log)") from None
    if "run" not in payload:
        raise WeightsFileError(f"{name} has no 'run' section (id, status, schedule): it was not saved by this app")
    run = _checked(name, "run section", check_run_section, payload["run"])
    epochs = _checked(name, "epoch history", check_epochs, payload.get("epochs", []))
    state = _checked(name, "training state", check_training_state, payload.get("training_state", {}))
    return WeightsFile(config, payload["state_dict"], run, epochs, state)


def _checked(name: str, part: str, check, value):
    try:
        return check(value)
    except ValueError as exc:
        raise WeightsFileError(f"{name}: its {part} is invalid: {exc}") from None


def check_training_state(state) -> dict:
    """The optimizer state, epochs and phases done, elapsed seconds and batch order a weights file carries,
    checked: ValueError naming the first bad one."""
    if not isinstance(state, dict):
        raise ValueError(f"should be a dict; got a {type(state).__name__}")
    checked = {}
    for key in ("epochs_done", "phases_done"):
        if state.get(key) is not None:
            if not is_int(state[key]) or state[key] < 0:
                raise ValueError(f"{key}: should be a whole number; got {short_repr(state[key])}")
            checked[key] = state[key]
    if state.get("elapsed") is not None:
        if not is_number(state["elapsed"]) or not 0 <= state["elapsed"] < math.inf:
            raise ValueError(f"elapsed: should be seconds; got {short_repr(state['elapsed'])}")
        checked["elapsed"] = float(state["elapsed"])
    if isinstance(state.get("optimizer"), dict):
        checked["optimizer"] = state["optimizer"]  # checkpoint_blob starts a fresh one when it does not fit
    generator = state.get("batch_generator")
    if isinstance(generator, torch.Tensor):
        try:
            torch.Generator().set_state(generator)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError("its batch order (batch_generator) is damaged") from None
        checked["batch_generator"] = generator
    return checked


def _unreadable(name: str, what: str, detail) -> WeightsFileError:
    """The user's sentence; torch's or zipfile's own words go to the server log."""
    if isinstance(detail, BaseException):
        detail = f"{type(detail).__name__}: {_first_line(detail)}"
    log.warning("uploaded weights %s %s: %s", name, what.split(" (")[0], detail)
    return WeightsFileError(f"{name} {what}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def checkpoint_blob(weights: WeightsFile) -> bytes:
    """The checkpoint bytes (core.engine.checkpoint) for these weights, so the run can be continued
    (TrainingRun.resume). What the file does not carry starts fresh: the optimizer state (momentum buffers and
    Adam moments at zero), the batch order (from the config's seed), the counters (from its epochs)."""
    config = weights.config
    model = build_model(config, weights.state_dict)
    state = weights.training_state
    optimizer_state = state.get("optimizer")
    if not checkpoint.optimizer_state_fits(config.optimizer, optimizer_state):
        optimizer_state = TrainStep.with_model(config, model).optimizer.state_dict()
    generator = state.get("batch_generator")
    if not isinstance(generator, torch.Tensor):
        generator = torch.Generator().manual_seed(config.seed).get_state()
    last = weights.epochs[-1] if weights.epochs else {"epoch": 0, "elapsed": 0.0}
    return checkpoint.to_bytes(checkpoint.make(
        config, model.state_dict(), optimizer_state, epochs_done=state.get("epochs_done", last["epoch"]),
        phases_done=state.get("phases_done", len(weights.run.get("schedule") or [])),
        elapsed=state.get("elapsed", last["elapsed"]), batch_generator=generator))


def import_weights(store: Store, weights: WeightsFile, *, test_loss: float | None = None,
                   test_acc: float | None = None, data_source: str = "") -> str:
    """Record an uploaded model as a run in the store (history, weights), ready to evaluate or continue."""
    config = weights.config
    original = weights.run.get("id")
    run_id = store.create_run(config.to_dict(), device=weights.run.get("device") or "uploaded file",
                              data_source=data_source or weights.run.get("data_source", ""),
                              torch_version=torch.__version__, parameters=weights.parameters, origin="upload")
    try:
        epochs_done = weights.training_state.get("epochs_done")
        schedule = weights.run.get("schedule") or []
        for epochs, lr in schedule:
            store.add_phase(run_id, int(epochs), float(lr))
        for record in weights.epochs:
            if epochs_done is None or record["epoch"] <= epochs_done:
                store.add_epoch(run_id, record)
        store.save_checkpoint(run_id, checkpoint_blob(weights))
        message = f"imported from a weights file (original run {original})" if original else \
            "imported from a weights file"
        status = weights.run.get("status")
        status = status if status in (RunStatus.FINISHED, RunStatus.STOPPED, RunStatus.PRUNED) else RunStatus.STOPPED
        store.finish_run(run_id, status, message, test_loss, test_acc)
    except Exception:
        store.delete_run(run_id)
        raise
    return run_id
