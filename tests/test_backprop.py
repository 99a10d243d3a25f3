"""MLPStep's hand-written forward/backward against torch autograd on the same nn.Sequential."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.engine.backprop import MLPStep
from core.config import RunConfig
from core.engine.model import build_mlp, macs_per_sample, parameter_count, summarize, training_flops

ACTIVATION_MODULES = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
HIDDEN = {1: (32,), 2: (48, 24), 3: (40, 32, 16)}
INPUT, CLASSES = 784, 10


def reference_mlp(hidden, activation, seed, dtype=torch.float32) -> nn.Sequential:
    """Built with torch's own layers, independently of core.engine.model."""
    torch.manual_seed(seed)
    sizes = [INPUT, *hidden, CLASSES]
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATION_MODULES[activation]())
    return nn.Sequential(*layers).to(dtype)


def autograd_loss_and_grads(model, x, y):
    ref = copy.deepcopy(model).requires_grad_(True)
    loss = F.cross_entropy(ref(x), y)
    loss.backward()
    grads = [g for layer in ref if isinstance(layer, nn.Linear) for g in (layer.weight.grad, layer.bias.grad)]
    return loss.detach(), grads


def batch(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, INPUT, generator=g, dtype=dtype)  # like pixels in [0, 1]
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_loss_and_gradients_equal_autograd(activation, depth):
    model = reference_mlp(HIDDEN[depth], activation, seed=depth)
    step = MLPStep(model, activation)
    # one MLPStep across batch sizes, including an odd last batch, a single sample and a larger batch again
    for i, n in enumerate([100, 37, 1, 128]):
        x, y = batch(n, seed=10 * depth + i)
        loss, grads = step(x, y)
        ref_loss, ref_grads = autograd_loss_and_grads(model, x, y)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-7)
        assert len(grads) == len(ref_grads) == 2 * (depth + 1)
        for got, want in zip(grads, ref_grads):
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_gradients_equal_autograd_in_float64(activation):
    model = reference_mlp((24, 16), activation, seed=5, dtype=torch.float64)
    step = MLPStep(model, activation)
    x, y = batch(33, seed=3, dtype=torch.float64)
    loss, grads = step(x, y)
    ref_loss, ref_grads = autograd_loss_and_grads(model, x, y)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def test_gradients_order_is_weight_then_bias_per_layer_and_shares_parameter_storage():
    model = reference_mlp((16,), "relu", seed=0)
    step = MLPStep(model, "relu")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    expected = [p for layer in linears for p in (layer.weight, layer.bias)]
    assert len(step.params) == len(expected)
    for ours, param in zip(step.params, expected):
        assert ours.data_ptr() == param.data_ptr()
        assert ours.shape == param.shape
    with torch.no_grad():
        step.params[0].add_(1.0)  # updates through MLPStep's params reach the model
    assert torch.equal(step.params[0], linears[0].weight)


def test_saturated_relu_units_get_zero_gradient_like_autograd():
    model = reference_mlp((8,), "relu", seed=1)
    with torch.no_grad():
        model[0].bias[:4] = -1e3  # four units never fire
    x, y = batch(20, seed=2)
    loss, grads = MLPStep(model, "relu")(x, y)
    _, ref_grads = autograd_loss_and_grads(model, x, y)
    assert torch.count_nonzero(grads[0][:4]) == 0
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_does_not_touch_the_model_weights():
    model = reference_mlp((16, 8), "tanh", seed=4)
    before = copy.deepcopy(model.state_dict())
    MLPStep(model, "tanh")(*batch(50, seed=1))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_sgd_steps_with_mlpstep_follow_autograd_training():
    """Ten plain-SGD steps driven by MLPStep's gradients land on the same weights as autograd + torch.optim."""
    model = reference_mlp((32,), "relu", seed=7)
    ours = copy.deepcopy(model).requires_grad_(False)
    step = MLPStep(ours, "relu")
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for i in range(10):
        x, y = batch(64 if i < 9 else 17, seed=100 + i)
        _, grads = step(x, y)
        torch._foreach_add_(step.params, grads, alpha=-0.5)
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# -- core.engine.model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_build_mlp_structure(activation):
    model = build_mlp(RunConfig(hidden_sizes=(64, 32), activation=activation), 784, 10)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, ACTIVATION_MODULES[activation], nn.Linear, ACTIVATION_MODULES[activation], nn.Linear]
    shapes = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert shapes == [(784, 64), (64, 32), (32, 10)]
    assert parameter_count(model) == 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
    rows = summarize(model)
    assert [r.kind for r in rows] == [t.__name__ for t in kinds]
    assert sum(r.parameters for r in rows) == parameter_count(model)


def test_build_mlp_is_seeded_and_independent_of_global_rng():
    config = RunConfig(hidden_sizes=(32,), seed=3)
    torch.manual_seed(0)
    a = build_mlp(config, 784, 10)
    torch.manual_seed(12345)
    b = build_mlp(config, 784, 10)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = build_mlp(config.replace(seed=4), 784, 10)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_build_mlp_uses_pytorch_default_init_ranges():
    model = build_mlp(RunConfig(hidden_sizes=(256,)), 784, 10)
    for layer in (model[0], model[2]):
        bound = 1 / layer.in_features ** 0.5  # kaiming_uniform(a=sqrt(5)) and the bias both use 1/sqrt(fan_in)
        assert layer.weight.abs().max() <= bound
        assert layer.bias.abs().max() <= bound
        assert layer.weight.abs().max() > 0.9 * bound  # uniform over the whole range, not a narrow one


def test_macs_per_sample():
    assert macs_per_sample(784, (32,), 10) == 784 * 32 + 32 * 10
    assert macs_per_sample(784, (64, 16), 10) == 784 * 64 + 64 * 16 + 16 * 10


def test_training_flops_count_6_per_mac_trained_and_2_per_mac_evaluated():
    macs = 784 * 32 + 32 * 10
    assert training_flops(784, (32,), 10, 100) == 6 * macs * 100
    assert training_flops(784, (32,), 10, 48_000, 12_000) == 2 * macs * (3 * 48_000 + 12_000)  # bench's epoch


@pytest.mark.parametrize("hidden, activation", [((32,), "relu"), ((128, 64, 16), "gelu")])
def test_layer_rows_match_the_built_models_summary(hidden, activation):
    from core.engine.model import layer_rows

    config = RunConfig(hidden_sizes=hidden, activation=activation)
    assert layer_rows(config, 784, 10) == summarize(build_mlp(config, 784, 10))
