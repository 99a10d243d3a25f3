"""Which compute devices this machine has, why the others are missing, and honest timing helpers."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass

import torch

from ..config import DeviceError  # noqa: F401 (re-exported: the error hierarchy lives in core.config)


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cpu", "cuda", "mps"
    available: bool
    label: str  # e.g. "CUDA: NVIDIA H100 80GB HBM3"
    reason: str = ""  # why it is unavailable


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def list_devices() -> list[DeviceInfo]:
    cores = os.cpu_count() or 1
    devices = [DeviceInfo("cpu", True, f"CPU: {cpu_name()} ({cores} cores)")]
    devices.append(_cuda_info())
    devices.append(_mps_info())
    return devices


def _cuda_info() -> DeviceInfo:
    if not torch.backends.cuda.is_built():
        return DeviceInfo("cuda", False, "CUDA", "this PyTorch build has no CUDA support")
    try:
        if torch.cuda.is_available():
            return DeviceInfo("cuda", True, f"CUDA: {torch.cuda.get_device_name(0)}")
    except Exception as exc:  # a broken driver raises here rather than returning False
        return DeviceInfo("cuda", False, "CUDA", f"the CUDA driver failed: {exc}")
    return DeviceInfo("cuda", False, "CUDA", "no NVIDIA GPU found")


def _mps_info() -> DeviceInfo:
    if not torch.backends.mps.is_built():
        return DeviceInfo("mps", False, "MPS", "Apple-silicon GPUs only (not this machine)")
    if not torch.backends.mps.is_available():
        return DeviceInfo("mps", False, "MPS", "MPS is built in but not available (needs macOS 12.3+)")
    return DeviceInfo("mps", True, "MPS: Apple GPU")


def resolve_device(spec: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; a named device that is missing raises DeviceError."""
    infos = {d.kind: d for d in list_devices()}
    if spec == "auto":
        for kind in ("cuda", "mps"):
            if infos[kind].available:
                return torch.device(kind)
        return torch.device("cpu")
    if spec not in infos:
        raise DeviceError(f"unknown device {spec!r}; choose auto, cpu, cuda or mps")
    info = infos[spec]
    if not info.available:
        raise DeviceError(f"{info.label} is not available: {info.reason}")
    return torch.device(spec)


def device_label(device: torch.device) -> str:
    for info in list_devices():
        if info.kind == device.type:
            return info.label
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so a wall-clock reading covers the work (a sync point on GPUs)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def gemm_flops_per_second(device: torch.device, size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained fp32 matmul rate: the hardware limit the training loop is compared against."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):  # warm-up: allocation, BLAS/cuBLAS initialisation
        a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            a @ b
        synchronize(device)
        count += 4
    return 2 * size**3 * count / (time.perf_counter() - start)


def default_cpu_threads() -> int:
    """Torch CPU threads for training when none are asked for: $TRAIN_THREADS, else cores - 1 (at least 1).

    One core is left for the server, the browser or the shell: on a busy 2-core machine 2 intra-op threads
    ran 10-20x slower than 1, because OpenMP spin-waits for a descheduled partner thread.
    """
    value = os.environ.get("TRAIN_THREADS", "").strip()
    if value:
        try:
            if int(value) >= 1:
                return int(value)
        except ValueError:
            pass
        raise DeviceError(f"TRAIN_THREADS must be a whole number of at least 1; got {value!r}")
    return max(1, (os.cpu_count() or 2) - 1)


def set_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count (process-wide); returns the previous value."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    return previous


@contextlib.contextmanager
def cpu_threads(threads: int | None, device: torch.device | str = "cpu"):
    """Within the block, work on the CPU uses `threads` intra-op threads (None: as set now); the previous count
    returns afterwards. On another device the block changes nothing."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    previous = set_cpu_threads(threads) if kind == "cpu" and threads else None
    try:
        yield
    finally:
        if previous is not None:
            set_cpu_threads(previous)
