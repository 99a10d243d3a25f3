"""One training step: the model, its hand-written gradients and its optimizer, owned together.

TrainStep is the one place that builds the three from a config and that says what a step is: the
loss and gradients of a batch (backprop.MLPStep), then the optimizer's update (optim). The Trainer,
the CUDA graph capture (cuda_graph.GraphedStep) and the speedup map's timing loop all call it.
A step at the tutorial's size is ~0.1 ms, so calling it costs one Python method call and nothing more.
"""
from __future__ import annotations

import torch

from ..config import RunConfig
from .backprop import MLPStep
from .model import build_mlp
from .optim import make_optimizer


class TrainStep:
    """step(x, y) trains the model on one batch and returns its loss (a tensor on the device, not synced)."""

    def __init__(self, config: RunConfig, input_size: int, num_classes: int, device: torch.device | str = "cpu"):
        """A fresh model from the config (seeded), on `device`."""
        self._own(config, build_mlp(config, input_size, num_classes), device)

    @classmethod
    def with_model(cls, config: RunConfig, model: torch.nn.Sequential, device: torch.device | str = "cpu") -> TrainStep:
        """A step around an existing model of the config's shape (e.g. one with loaded weights)."""
        step = cls.__new__(cls)
        step._own(config, model, device)
        return step

    def _own(self, config: RunConfig, model: torch.nn.Sequential, device) -> None:
        self.model = model.to(device).requires_grad_(False)  # gradients come from MLPStep, not autograd
        self.gradients = MLPStep(self.model, config.activation)
        self.params = self.gradients.params  # plain tensors sharing the model's storage
        self.optimizer = make_optimizer(config.optimizer, self.params, config.lr, config.weight_decay,
                                        config.momentum)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss, grads = self.gradients(x, y)
        self.optimizer.step(grads)
        return loss
