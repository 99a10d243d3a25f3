"""What the machine does while a run trains: the training process's memory and CPU, each core's load, and on
CUDA the GPU's utilisation and memory. Read about once a second by a thread of the training process itself
(never per batch), so a sample costs that process a few hundred microseconds of one core a second.

GPU figures come from NVML (nvidia-ml-py, imported as pynvml) and are the whole device's, every process on it
included. Without the library, a driver or a working NVML a sample says why in `gpu_note` ("no GPU telemetry:
..."); telemetry never raises into a run.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import psutil

SAMPLE_INTERVAL_S = 1.0
NO_GPU = "no GPU telemetry"
CPU_RUN_NOTE = "no GPU in use (the run trains on the CPU)"


@dataclass(frozen=True)
class TelemetrySample:
    at: float  # time.time() when read
    seconds: float  # the time since the previous sample (or since sampling started) that process_cpu_percent covers
    rss_bytes: int | None  # the training process's resident memory
    process_cpu_percent: float | None  # its CPU use over `seconds`; 100 = one core busy (so up to 100 x threads)
    cpu_percent: tuple[float, ...] = ()  # each core's load over the same span, every process included
    gpu_percent: float | None = None  # the GPU's utilisation (whole device), None without GPU telemetry
    gpu_memory_used: int | None = None  # bytes, whole device
    gpu_memory_total: int | None = None
    gpu_note: str = ""  # why there are no GPU figures ('' when there are)


class TelemetrySummary:
    """A run's figures so far: peak sampled memory, and CPU and GPU use averaged over time (each sample weighted by
    the seconds it covers). Continued runs add to the same summary; a resumed run starts from its stored figures."""

    def __init__(self) -> None:
        self.peak_rss_bytes: int | None = None
        self.samples = 0
        self._cpu_sum = self._cpu_seconds = 0.0
        self._gpu_sum = self._gpu_seconds = 0.0

    def add(self, sample: TelemetrySample) -> None:
        self.samples += 1
        if sample.rss_bytes is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes or 0, sample.rss_bytes)
        if sample.process_cpu_percent is not None and sample.seconds > 0:
            self._cpu_sum += sample.process_cpu_percent * sample.seconds
            self._cpu_seconds += sample.seconds
        if sample.gpu_percent is not None and sample.seconds > 0:
            self._gpu_sum += sample.gpu_percent * sample.seconds
            self._gpu_seconds += sample.seconds

    def seed(self, peak_rss_bytes: int | None, mean_cpu_percent: float | None, mean_gpu_percent: float | None,
             seconds: float) -> None:
        """Start from figures stored earlier, as if they were one sample covering `seconds` of training."""
        if peak_rss_bytes is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes or 0, int(peak_rss_bytes))
        if seconds > 0 and mean_cpu_percent is not None:
            self._cpu_sum += mean_cpu_percent * seconds
            self._cpu_seconds += seconds
        if seconds > 0 and mean_gpu_percent is not None:
            self._gpu_sum += mean_gpu_percent * seconds
            self._gpu_seconds += seconds

    @property
    def mean_cpu_percent(self) -> float | None:
        return self._cpu_sum / self._cpu_seconds if self._cpu_seconds else None

    @property
    def mean_gpu_percent(self) -> float | None:
        return self._gpu_sum / self._gpu_seconds if self._gpu_seconds else None

    @property
    def known(self) -> bool:
        return self.peak_rss_bytes is not None or self._cpu_seconds > 0 or self._gpu_seconds > 0


def _import_nvml():
    import pynvml  # nvidia-ml-py

    return pynvml


class GpuProbe:
    """One CUDA device's utilisation and memory through NVML; `note` says why not where it cannot (then read()
    returns None). `nvml` is the pynvml module (tests pass fakes); by default it is imported here."""

    def __init__(self, cuda_index: int = 0, nvml=None):
        self.note = ""
        self.nvml = None
        self.handle = None
        try:
            nvml = nvml if nvml is not None else _import_nvml()
        except ImportError:
            self.note = f"{NO_GPU}: nvidia-ml-py (pynvml) is not installed"
            return
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound (no driver), NVMLError_DriverNotLoaded, ...
            self.note = f"{NO_GPU}: {_reason(exc)}"
            return
        self.nvml = nvml
        try:
            self.handle = _nvml_handle(nvml, cuda_index)
        except Exception as exc:
            self.note = f"{NO_GPU}: NVML does not find CUDA device {cuda_index}: {_reason(exc)}"
            self.close()

    def read(self) -> tuple[float, int, int] | None:
        """(utilisation %, memory used, memory total) or None (and a note) once NVML fails."""
        if self.handle is None:
            return None
        try:
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            return float(rates.gpu), int(memory.used), int(memory.total)
        except Exception as exc:
            self.note = f"{NO_GPU}: NVML stopped answering: {_reason(exc)}"
            self.close()
            return None

    def close(self) -> None:
        self.handle = None
        if self.nvml is not None:
            nvml, self.nvml = self.nvml, None
            try:
                nvml.nvmlShutdown()
            except Exception:
                pass


def _nvml_handle(nvml, cuda_index: int):
    """The NVML handle of torch's CUDA device `cuda_index`. The two number GPUs differently: torch counts only the
    devices CUDA_VISIBLE_DEVICES leaves, fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, while NVML counts every
    GPU in PCI order. The PCI address names the same card to both, so it is used where torch reports it; else the
    index, which is right on a machine with one GPU and no CUDA_VISIBLE_DEVICES."""
    try:
        import torch

        props = torch.cuda.get_device_properties(cuda_index)
        address = f"{props.pci_domain_id:x}:{props.pci_bus_id:x}:{props.pci_device_id:x}.0"
    except Exception:  # no CUDA in this process, or a torch without the PCI fields
        return nvml.nvmlDeviceGetHandleByIndex(cuda_index)
    return nvml.nvmlDeviceGetHandleByPciBusId(address)


def _reason(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


class ProcessProbe:
    """Reads one process (by default this one) and the machine's cores; a GpuProbe too when given."""

    def __init__(self, pid: int | None = None, gpu: GpuProbe | None = None, gpu_note: str = CPU_RUN_NOTE):
        self.process = psutil.Process(pid if pid is not None else os.getpid())
        # This process's CPU time comes from time.process_time() (nanoseconds); psutil reads another process's
        # in clock ticks (10 ms), which reads 0 % for a phase of a few ticks.
        self.own = self.process.pid == os.getpid()
        self.gpu = gpu
        self.gpu_note = gpu_note
        self.started = time.monotonic()
        self.cpu_started = time.process_time()
        # Both cpu_percent calls measure from their previous call; these first ones set the start (they read 0).
        # psutil.cpu_percent keeps one start per process, so two probes in one process shorten each other's spans:
        # the figures stay true loads, over shorter spans.
        if not self.own:
            self.process.cpu_percent(None)
        psutil.cpu_percent(None, percpu=True)

    def sample(self) -> TelemetrySample:
        now, cpu_now = time.monotonic(), time.process_time()
        seconds, self.started = now - self.started, now
        cpu_seconds, self.cpu_started = cpu_now - self.cpu_started, cpu_now
        try:
            with self.process.oneshot():
                rss = self.process.memory_info().rss
                if self.own:
                    process_cpu = 100.0 * cpu_seconds / seconds if seconds > 0 else 0.0
                else:
                    process_cpu = self.process.cpu_percent(None)
        except psutil.Error:  # the process is gone (a probe of another process)
            rss = process_cpu = None
        cores = tuple(psutil.cpu_percent(None, percpu=True))
        gpu = self.gpu.read() if self.gpu is not None else None
        note = "" if gpu is not None else (self.gpu.note if self.gpu is not None else self.gpu_note)
        used = total = percent = None
        if gpu is not None:
            percent, used, total = gpu
        return TelemetrySample(time.time(), seconds, rss, process_cpu, cores, percent, used, total, note)

    def close(self) -> None:
        if self.gpu is not None:
            self.gpu.close()


class TelemetrySampler:
    """A thread sampling this process every `interval_s` while started, and once more when stopped (so a phase
    shorter than the interval still has its figures). Each sample goes into `summary` and to on_sample."""

    def __init__(self, device: str = "cpu", cuda_index: int = 0, interval_s: float = SAMPLE_INTERVAL_S,
                 on_sample: Callable[[TelemetrySample], None] | None = None, summary: TelemetrySummary | None = None):
        self.device = device
        self.cuda_index = cuda_index
        self.interval_s = interval_s
        self.on_sample = on_sample
        self.summary = summary if summary is not None else TelemetrySummary()
        self.last: TelemetrySample | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe: ProcessProbe | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        gpu = GpuProbe(self.cuda_index) if self.device == "cuda" else None
        self._probe = ProcessProbe(gpu=gpu)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take the last sample and end the thread (the summary is complete once this returns)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=5)
        if self._probe is not None:
            self._probe.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()
        self._take()

    def _take(self) -> None:
        try:
            sample = self._probe.sample()
        except Exception:  # telemetry must never disturb the run: a failed read is skipped
            return
        self.last = sample
        self.summary.add(sample)
        if self.on_sample is not None:
            try:
                self.on_sample(sample)
            except Exception:
                pass
