"""The training engine: data, devices, model, hand-written step, optimizers, training loop, evaluation.

Imports nothing from runs, studies or exchange."""
