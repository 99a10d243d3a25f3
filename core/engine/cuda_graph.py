"""The resident training step captured as one CUDA graph: one launch per batch instead of ~30.

At the tutorial's size (784-32-10, batch 100) a step is ~30 tiny kernels. Eager PyTorch launches
each from Python for ~5 us, and the GPU finishes each kernel before the next is queued, so an eager
GPU step is bound by launch overhead, just as the CPU is. A captured graph replays the whole step
(forward, hand-written backward, optimizer update) with one launch. It runs the same kernels on the
same memory, so its losses match eager ones within float tolerance (tests/test_compare.py checks
this on a GPU, and the bookkeeping below on the CPU with a stand-in backend).

Captured: SGD and SGD + momentum. The learning rate is a Python number baked into the graph, so a
new phase re-captures (milliseconds). Adam stays eager: its bias corrections are Python numbers that
change every step. A batch of another size (an epoch's ragged last batch) runs eagerly.
torch.compile(mode="reduce-overhead") also replays CUDA graphs, but compiles for tens of seconds
(~30 s on the CPU, see NOTES), more than a whole tutorial run takes; a manual capture takes ms.
"""
from __future__ import annotations

import contextlib

import torch

from .step import TrainStep

GRAPH_OPTIMIZERS = ("sgd", "sgd_momentum")
WARMUP_STEPS = 3  # eager steps before capture: cuBLAS handles, workspaces and caches are created here


def graph_support(config, device_type: str) -> tuple[bool, str]:
    """(whether the step is replayed as a CUDA graph, why not when it is not)."""
    if device_type != "cuda":
        return False, "CUDA graphs apply to CUDA devices only"
    if not config.cuda_graphs:
        return False, "CUDA graphs turned off: every step launches its kernels one by one (eager)"
    if config.pipeline != "resident":
        return False, "the tutorial's pipeline brings each batch from the CPU, so it runs eagerly"
    if config.optimizer not in GRAPH_OPTIMIZERS:
        return False, "Adam's bias correction changes every step, so it runs eagerly"
    return True, ""


class CudaBackend:
    """The real thing: warm-up and capture on one side stream, replay on the current stream."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    @contextlib.contextmanager
    def side_stream(self):
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def capture(self, fn):
        """Record fn's kernels without running them; returns (graph, fn's output tensors, static)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            out = fn()
        return graph, out

    def keep_alive(self, tensor: torch.Tensor) -> None:
        # Made on the side stream, used later on the current one: tell the allocator.
        tensor.record_stream(torch.cuda.current_stream(self.device))

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class GraphedStep:
    """Drop-in for a TrainStep (`loss = step(x, y)`) that replays the step as a CUDA graph.

    The first WARMUP_STEPS batches train eagerly (on the capture stream); the next one is copied
    into static input buffers, the step is captured, and from then on each batch is a copy plus one
    replay. The returned loss is a fresh tensor (the graph overwrites its own each replay).
    """

    def __init__(self, step: TrainStep, device: torch.device, backend=None, warmup_steps: int = WARMUP_STEPS):
        self.step = step
        self.backend = backend or CudaBackend(device)
        self.warmup_steps = max(1, warmup_steps)  # momentum buffers must exist before capture
        self.eager_steps = 0
        self.graph = None
        self.static_x: torch.Tensor | None = None
        self.static_y: torch.Tensor | None = None
        self.static_loss: torch.Tensor | None = None
        self.key = None  # what the graph baked in: (learning rate, momentum buffers)
        self.captures = 0
        self.replays = 0
        self.failure = ""  # set if capture failed: the run goes on eagerly

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.failure or (self.static_x is not None and x.shape != self.static_x.shape):
            return self.step(x, y)
        if self.static_x is None:
            self.static_x, self.static_y = torch.empty_like(x), torch.empty_like(y)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        if self.eager_steps < self.warmup_steps:
            self.eager_steps += 1
            with self.backend.side_stream():
                loss = self.step(self.static_x, self.static_y)
            self.backend.keep_alive(loss)
            return loss
        if self.graph is None or self.key != self._current_key():
            if not self._capture():
                return self.step(self.static_x, self.static_y)
        self.graph.replay()
        self.replays += 1
        return self.static_loss.clone()

    def _current_key(self):
        optimizer = self.step.optimizer
        return optimizer.lr, id(getattr(optimizer, "buffers", None))

    def _capture(self) -> bool:
        if self.graph is not None:
            self.backend.synchronize()  # the old graph may still be replaying; then free it
            self.graph = self.static_loss = None
        try:
            self.graph, self.static_loss = self.backend.capture(lambda: self.step(self.static_x, self.static_y))
        except Exception as exc:  # e.g. an op that syncs with the host: keep training, eagerly
            self.graph = None
            self.failure = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); running eagerly"
            with contextlib.suppress(Exception):
                self.backend.synchronize()
            return False
        # Keep the momentum buffers alive with the key so their id cannot be reused by a new list.
        self._buffers = getattr(self.step.optimizer, "buffers", None)
        self.key = self._current_key()
        self.captures += 1
        return True


def fastest_step(step: TrainStep, config, device: torch.device) -> TrainStep | GraphedStep:
    """The step as a run calls it: replayed as a CUDA graph where graph_support allows, else the step itself."""
    return GraphedStep(step, device) if graph_support(config, device.type)[0] else step
