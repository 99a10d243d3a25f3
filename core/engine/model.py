"""The feedforward network: an MLP built from a RunConfig, with a summary for the UI."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import RunConfig

ACTIVATION_LAYERS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def build_mlp(config: RunConfig, input_size: int, num_classes: int) -> nn.Sequential:
    """Flattened input -> [Linear, activation] per hidden size -> Linear to class logits.

    Weights are drawn from a generator seeded by config.seed on the CPU (PyTorch's default
    Linear initialisation), so every device starts from the same numbers and concurrent runs
    do not race on the global RNG.
    """
    sizes = [input_size, *config.hidden_sizes, num_classes]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATION_LAYERS[config.activation]())
    model = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(layer.in_features)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    shape: str
    parameters: int


def summarize(model: nn.Module) -> list[LayerRow]:
    rows = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            rows.append(LayerRow(f"{i}", "Linear", f"{layer.in_features} -> {layer.out_features}",
                                 sum(p.numel() for p in layer.parameters())))
        else:
            rows.append(LayerRow(f"{i}", type(layer).__name__, "", 0))
    return rows


def layer_rows(config: RunConfig, input_size: int, num_classes: int) -> list[LayerRow]:
    """The rows summarize() gives for build_mlp(config, ...), without building it (a queued run's page)."""
    sizes = [input_size, *config.hidden_sizes, num_classes]
    activation = ACTIVATION_LAYERS[config.activation].__name__
    rows, index = [], 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        rows.append(LayerRow(f"{index}", "Linear", f"{fan_in} -> {fan_out}", fan_in * fan_out + fan_out))
        index += 1
        if i < len(sizes) - 2:
            rows.append(LayerRow(f"{index}", activation, "", 0))
            index += 1
    return rows


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_sample(input_size: int, hidden_sizes: tuple[int, ...], num_classes: int) -> int:
    """Multiply-accumulates of one forward pass (the matmuls; activations and biases are noise)."""
    sizes = [input_size, *hidden_sizes, num_classes]
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


FORWARD_FLOPS_PER_MAC = 2  # a multiply and an add
TRAINING_FLOPS_PER_MAC = 6  # forward 2, backward 4 (the gradients of the layer's input and of its weights)


def training_flops(input_size: int, hidden_sizes: tuple[int, ...], num_classes: int, train_samples: int,
                   eval_samples: int = 0) -> float:
    """Matmul FLOPs of training on train_samples (forward and backward) and evaluating eval_samples (forward)."""
    macs = macs_per_sample(input_size, hidden_sizes, num_classes)
    return float(macs * (TRAINING_FLOPS_PER_MAC * train_samples + FORWARD_FLOPS_PER_MAC * eval_samples))
