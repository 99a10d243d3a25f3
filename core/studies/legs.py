"""Legs of a comparison: a device, a CPU thread count, a data pipeline and the CUDA-graph switch.

Every leg trains the comparison's RunConfig with these replaced (core.studies.compare runs them; core.studies.parity
checks that they start the same).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..config import DEVICES, ConfigError, DeviceError, RunConfig
from ..engine.devices import list_devices

LEG_DEVICES = tuple(d for d in DEVICES if d != "auto")
DEVICE_NAMES = {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}


@dataclass(frozen=True)
class Leg:
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None keeps the training process's setting
    pipeline: str = "resident"
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if self.device not in LEG_DEVICES:
            raise ConfigError(f"leg device: must be one of {', '.join(LEG_DEVICES)}; got {self.device!r}")
        RunConfig(device=self.device, threads=self.threads, pipeline=self.pipeline, cuda_graphs=self.cuda_graphs)

    @classmethod
    def parse(cls, text: str) -> "Leg":
        """'device=cpu,threads=1,pipeline=dataloader,graphs=off' -> Leg (keys in any order, all optional)."""
        values: dict = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            key, value = key.strip().lower(), value.strip().lower()
            if not sep or not value:
                raise ConfigError(f"leg '{text}': '{part}' should look like KEY=VALUE, e.g. device=cpu,threads=1")
            if key == "device":
                values["device"] = value
            elif key == "threads":
                try:
                    values["threads"] = int(value)
                except ValueError:
                    raise ConfigError(f"leg '{text}': threads must be a whole number; got {value!r}") from None
            elif key == "pipeline":
                values["pipeline"] = "dataloader" if value == "tutorial" else value
            elif key in ("graphs", "cuda_graphs"):
                if value not in ("on", "off", "true", "false", "1", "0"):
                    raise ConfigError(f"leg '{text}': graphs must be on or off; got {value!r}")
                values["cuda_graphs"] = value in ("on", "true", "1")
            else:
                raise ConfigError(f"leg '{text}': unknown key {key!r}; use device, threads, pipeline, graphs")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"leg '{text}': {exc}") from None

    def spec(self) -> str:
        parts = [f"device={self.device}"]
        if self.threads is not None:
            parts.append(f"threads={self.threads}")
        if self.pipeline != "resident":
            parts.append(f"pipeline={self.pipeline}")
        if not self.cuda_graphs and self.device == "cuda":
            parts.append("graphs=off")
        return ",".join(parts)

    def label(self) -> str:
        parts = [DEVICE_NAMES[self.device]]
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        if self.device == "cuda" and self.pipeline == "resident":
            parts.append("CUDA graph" if self.cuda_graphs else "eager")
        parts.append("tutorial DataLoader" if self.pipeline == "dataloader" else "resident")
        return " · ".join(parts)

    def config(self, base: RunConfig) -> RunConfig:
        return base.replace(device=self.device, threads=self.threads, pipeline=self.pipeline,
                            cuda_graphs=self.cuda_graphs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Leg":
        return cls(**data)


def unavailable_reason(leg: Leg) -> str:
    """'' when the leg's device is here, else why not (for the page and the CLI)."""
    for info in list_devices():
        if info.kind == leg.device:
            return "" if info.available else f"{info.label} is not available: {info.reason}"
    return f"unknown device {leg.device}"


def default_legs(with_pipeline: bool = False, devices=None) -> list[Leg]:
    """CPU vs the GPU when there is one; else CPU 1 thread vs CPU all threads. `with_pipeline` adds the
    tutorial's DataLoader pipeline on the fastest device, beside its resident leg."""
    available = {d.kind for d in (devices if devices is not None else list_devices()) if d.available}
    cores = os.cpu_count() or 1
    gpu = "cuda" if "cuda" in available else "mps" if "mps" in available else None
    if gpu:
        legs = [Leg("cpu", threads=cores), Leg(gpu)]
        tutorial = Leg(gpu, pipeline="dataloader")
    else:  # on one core there is nothing to compare threads with: one leg (legs must differ)
        legs = [Leg("cpu", threads=1), Leg("cpu", threads=cores)] if cores > 1 else [Leg("cpu", threads=1)]
        tutorial = Leg("cpu", threads=1, pipeline="dataloader")
    return legs + [tutorial] if with_pipeline else legs


def leg_identity(leg: Leg, default_threads: int | None = None) -> str:
    """What the leg computes with: its spec, with a CPU leg's unnamed thread count read as the default."""
    if leg.device == "cpu" and leg.threads is None and default_threads is not None:
        leg = dataclasses.replace(leg, threads=default_threads)
    return leg.spec()


def duplicate_legs_message(legs: list[Leg], default_threads: int | None = None) -> str:
    """'' when every leg differs, else one sentence naming the repeats (a repeated leg measures nothing new)."""
    seen: dict[str, int] = {}
    repeats, unnamed_threads = [], False
    for i, leg in enumerate(legs):
        key = leg_identity(leg, default_threads)
        if key in seen:
            first = legs[seen[key]]
            repeats.append(f"leg {i + 1} ({leg.spec()}) repeats leg {seen[key] + 1} ({first.spec()})")
            unnamed_threads |= leg.device == "cpu" and (leg.threads is None) != (first.threads is None)
        else:
            seen[key] = i
    if not repeats:
        return ""
    default = f"; a CPU leg without threads= uses {default_threads}" if unnamed_threads else ""
    return (f"{'; '.join(repeats)}{default}. Each leg must differ in device, threads, pipeline or graphs: "
            f"drop the repeat.")


def check_legs(legs: list[Leg], default_threads: int | None = None) -> None:
    """Fail before training anything when a leg's device is missing or a leg repeats another."""
    repeats = duplicate_legs_message(legs, default_threads)
    if repeats:
        raise ConfigError(repeats)
    for leg in legs:
        reason = unavailable_reason(leg)
        if reason:
            raise DeviceError(f"leg {leg.spec()}: {reason}")
