"""Optimizers as a few foreach tensor ops per step.

torch.optim's per-step Python costs ~50 us, a fifth of a whole step at the tutorial's size, so
the engine updates parameters itself. Parameters must not require grad (the engine's don't:
its gradients come from backprop.MLPStep), so the updates need no no_grad context. Each update
matches torch.optim's formula (tests compare against torch.optim as the reference).
"""
from __future__ import annotations

import torch


class Optimizer:
    """Base: holds the parameters and a learning rate that can change between phases."""

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0):
        self.params = params
        self.lr = lr
        self.weight_decay = weight_decay

    def _decayed(self, grads):
        if self.weight_decay:
            return torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        return grads

    def step(self, grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class SGD(Optimizer):
    def step(self, grads):
        torch._foreach_add_(self.params, self._decayed(grads), alpha=-self.lr)


class SGDMomentum(Optimizer):
    def __init__(self, params, lr, weight_decay=0.0, momentum=0.9):
        super().__init__(params, lr, weight_decay)
        self.momentum = momentum
        self.buffers: list[torch.Tensor] | None = None

    def step(self, grads):
        grads = self._decayed(grads)
        if self.buffers is None:  # torch.optim starts the buffer at the first gradient
            self.buffers = [g.clone() for g in grads]
        else:
            torch._foreach_mul_(self.buffers, self.momentum)
            torch._foreach_add_(self.buffers, grads)
        torch._foreach_add_(self.params, self.buffers, alpha=-self.lr)

    def state_dict(self):
        return {"buffers": self.buffers}

    def load_state_dict(self, state):
        self.buffers = state.get("buffers")


class Adam(Optimizer):
    def __init__(self, params, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    def step(self, grads):
        grads = self._decayed(grads)
        self.steps += 1
        torch._foreach_lerp_(self.exp_avg, grads, 1 - self.beta1)
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1 - self.beta2)
        bias1 = 1 - self.beta1 ** self.steps
        bias2 = 1 - self.beta2 ** self.steps
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, bias2 ** 0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.exp_avg, denom, -self.lr / bias1)

    def state_dict(self):
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state):
        self.steps = state["steps"]
        self.exp_avg = state["exp_avg"]
        self.exp_avg_sq = state["exp_avg_sq"]


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9) -> Optimizer:
    if name == "sgd":
        return SGD(params, lr, weight_decay)
    if name == "sgd_momentum":
        return SGDMomentum(params, lr, weight_decay, momentum)
    if name == "adam":
        return Adam(params, lr, weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")
