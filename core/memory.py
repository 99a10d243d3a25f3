"""A pre-flight memory estimate, so a run that cannot fit fails with a message instead of the OOM killer.

On Linux a CPU allocation that is too big often "succeeds" and the kernel kills the process later,
so the engine checks before it allocates.
"""
from __future__ import annotations

import torch

from .config import RunConfig

FLOAT_BYTES = 4
HEADROOM = 0.8  # use at most this share of the memory that is free now




def estimate_bytes(config: RunConfig, input_size: int, n_train: int, n_val: int) -> int:
    sizes = [input_size, *config.hidden_sizes, 10]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    optimizer_copies = {"sgd": 1, "sgd_momentum": 2, "adam": 3}[config.optimizer]
    weights = params * (2 + optimizer_copies)  # weights, gradients, optimizer state
    # Forward keeps every layer's pre- and post-activation for backward, and backward makes as many again.
    activations = config.batch_size * sum(sizes) * 4
    eval_rows = min(n_val, 8192)
    evaluation = eval_rows * max(sizes) * 3
    resident = (n_train + n_val) * input_size if config.pipeline == "resident" else n_val * input_size
    return FLOAT_BYTES * (weights + activations + evaluation + resident)


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
    from .train import TrainingError

    need = estimate_bytes(config, input_size, n_train, n_val)
    free = free_bytes(device)
    if free is not None and need > HEADROOM * free:
        raise TrainingError(f"out of memory: this run needs about {need / 2**30:.1f} GiB on {device.type}, "
                            f"but only {free / 2**30:.1f} GiB is free; use a smaller batch size or fewer/smaller "
                            f"hidden layers")
