"""A pre-flight memory estimate, so a run that cannot fit fails with a message instead of the OOM killer,
and, after a process was killed anyway, what points to the OOM killer (or away from it).

On Linux a CPU allocation that is too big often "succeeds" and the kernel kills the process later,
so the engine checks before it allocates.
"""
from __future__ import annotations

import torch

from ..config import MAX_HIDDEN_LAYERS, MAX_HIDDEN_SIZE, OPTIMIZERS, RunConfig, TrainingError
from .data import DATASET_SPECS
from .model import layer_rows

FLOAT_BYTES = 4
HEADROOM = 0.8  # use at most this share of the memory that is free now
OPTIMIZER_STATE_TENSORS = {"sgd": 0, "sgd_momentum": 1, "adam": 2}  # weight-sized tensors in its state_dict
EVAL_CHUNK = 8192  # rows per evaluation forward pass (validation and test): bounds memory for wide models
WEIGHTS_FILE_EXTRA_BYTES = 1 << 20  # the pickle's structure, up to 1,000 epochs' records, the batch generator


def estimate_bytes(config: RunConfig, input_size: int, n_train: int, n_val: int) -> int:
    sizes = [input_size, *config.hidden_sizes, DATASET_SPECS[config.dataset].num_classes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    optimizer_copies = {"sgd": 1, "sgd_momentum": 2, "adam": 3}[config.optimizer]
    weights = params * (2 + optimizer_copies)  # weights, gradients, optimizer state
    # Forward keeps every layer's pre- and post-activation for backward, and backward makes as many again.
    activations = config.batch_size * sum(sizes) * 4
    eval_rows = min(n_val, EVAL_CHUNK)
    evaluation = eval_rows * max(sizes) * 3
    resident = (n_train + n_val) * input_size if config.pipeline == "resident" else n_val * input_size
    return FLOAT_BYTES * (weights + activations + evaluation + resident)


def weights_file_bytes(config: RunConfig) -> int:
    """The most a weights file (Export, or a stored checkpoint) of this config takes: weights plus optimizer state."""
    spec = DATASET_SPECS[config.dataset]
    rows = layer_rows(config, spec.input_size, spec.num_classes)
    tensors = 1 + OPTIMIZER_STATE_TENSORS[config.optimizer]
    return FLOAT_BYTES * tensors * sum(r.parameters for r in rows) + WEIGHTS_FILE_EXTRA_BYTES


def largest_weights_file_bytes() -> int:
    """The weights file of the largest model RunConfig allows, on any dataset, with any optimizer (the upload limit)."""
    widest = (MAX_HIDDEN_SIZE,) * MAX_HIDDEN_LAYERS
    return max(weights_file_bytes(RunConfig(dataset=dataset, hidden_sizes=widest, optimizer=optimizer))
               for dataset in DATASET_SPECS for optimizer in OPTIMIZERS)


def free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(config: RunConfig, input_size: int, n_train: int, n_val: int, device: torch.device) -> None:
    need = estimate_bytes(config, input_size, n_train, n_val)
    free = free_bytes(device)
    if free is not None and need > HEADROOM * free:
        raise TrainingError(f"out of memory: this run needs about {need / 2**30:.1f} GiB on {device.type}, "
                            f"but only {free / 2**30:.1f} GiB is free; use a smaller batch size or fewer/smaller "
                            f"hidden layers")


# -- after the fact: was a killed process the out-of-memory killer's victim? ------------------------------------
def process_rss(pid: int) -> int | None:
    """A process's resident memory in bytes (Linux /proc), None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_limit() -> int | None:
    """The memory this machine or container can give: the smaller of MemTotal and this process's cgroup limit."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            limits += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:")]
    except (OSError, ValueError, IndexError):
        pass
    for path in _cgroup_files("memory.max", "memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limits.append(int(f.read().split()[0]))
        except (OSError, ValueError, IndexError):  # "max": no limit
            continue
    return min(limits) if limits else None


def oom_kills() -> int | None:
    """Processes the kernel's out-of-memory killer has ended so far (system-wide plus this cgroup's), if known."""
    counts = []
    for path in ["/proc/vmstat", *_cgroup_files("memory.events", "memory.oom_control")]:
        try:
            with open(path) as f:
                counts += [int(line.split()[1]) for line in f if line.startswith("oom_kill ")]
        except (OSError, ValueError, IndexError):
            continue
    return sum(counts) if counts else None


def _cgroup_files(v2_name: str, v1_name: str) -> list[str]:
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    files = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            files.append(f"/sys/fs/cgroup{path.rstrip('/')}/{v2_name}")
        elif "memory" in controllers.split(","):
            files.append(f"/sys/fs/cgroup/memory{path.rstrip('/')}/{v1_name}")
    return files


def oom_verdict(rss: int | None, kills_before: int | None) -> str:
    """For a process killed by SIGKILL: what points to (or away from) the out-of-memory killer, in words."""
    kills_now, limit = oom_kills(), memory_limit()
    limit_text = f"{limit / 2**30:.1f} GiB" if limit else ""
    if rss:
        used = f"{rss / 2**30:.1f} GiB" + (f" of {limit_text}" if limit else "")
    else:
        used = "an unknown amount of memory" + (f" (limit {limit_text})" if limit else "")
    if kills_before is not None and kills_now is not None and kills_now > kills_before:
        return f"the kernel's out-of-memory killer ended a process meanwhile; it was using {used}"
    if rss and limit and rss >= 0.8 * limit:
        return f"it was using {used}, so the out-of-memory killer is the likely cause"
    return f"it was using {used}, so not for lack of memory as far as can be told"
