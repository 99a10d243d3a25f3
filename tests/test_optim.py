"""core.engine.optim against torch.optim as the reference, fed identical gradients."""
import pytest
import torch

from core.engine.optim import SGD, Adam, SGDMomentum, make_optimizer

SHAPES = [(32, 784), (32,), (10, 32), (10,)]
STEPS = 8
LR_CHANGE_AT = 5  # the learning rate changes between phases; both sides see the change


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g) * 0.1 for s in SHAPES]


def make_grads(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(*s, generator=g) * 0.05 for s in SHAPES]


def run_pair(ours_factory, torch_factory, lr, new_lr):
    start = make_params()
    ours_params = [p.clone() for p in start]
    ref_params = [torch.nn.Parameter(p.clone()) for p in start]
    ours = ours_factory(ours_params, lr)
    ref = torch_factory(ref_params, lr)
    for step in range(STEPS):
        if step == LR_CHANGE_AT:
            ours.lr = new_lr
            for group in ref.param_groups:
                group["lr"] = new_lr
        grads = make_grads(step)
        ours.step([g.clone() for g in grads])
        for p, g in zip(ref_params, grads):
            p.grad = g.clone()
        ref.step()
        for a, b in zip(ours_params, ref_params):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-7, msg=f"step {step}")
    # the parameters really moved (a no-op optimizer would fail above only if torch's did too)
    assert not torch.allclose(ours_params[0], start[0])
    return ours


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_matches_torch(weight_decay):
    run_pair(lambda p, lr: SGD(p, lr, weight_decay),
             lambda p, lr: torch.optim.SGD(p, lr=lr, weight_decay=weight_decay), lr=0.5, new_lr=0.1)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_sgd_momentum_matches_torch(weight_decay, momentum):
    run_pair(lambda p, lr: SGDMomentum(p, lr, weight_decay, momentum),
             lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=momentum, weight_decay=weight_decay),
             lr=0.1, new_lr=0.01)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_matches_torch(weight_decay):
    run_pair(lambda p, lr: Adam(p, lr, weight_decay),
             lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=weight_decay), lr=1e-3, new_lr=1e-4)


def test_adam_with_other_betas_and_eps_matches_torch():
    run_pair(lambda p, lr: Adam(p, lr, 0.0, betas=(0.8, 0.99), eps=1e-6),
             lambda p, lr: torch.optim.Adam(p, lr=lr, betas=(0.8, 0.99), eps=1e-6), lr=1e-2, new_lr=1e-3)


@pytest.mark.parametrize("name, cls", [("sgd", SGD), ("sgd_momentum", SGDMomentum), ("adam", Adam)])
def test_make_optimizer(name, cls):
    params = make_params()
    opt = make_optimizer(name, params, 0.1, weight_decay=0.001, momentum=0.8)
    assert isinstance(opt, cls)
    assert opt.lr == 0.1 and opt.weight_decay == 0.001
    if name == "sgd_momentum":
        assert opt.momentum == 0.8


def test_make_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="rmsprop"):
        make_optimizer("rmsprop", make_params(), 0.1)


@pytest.mark.parametrize("factory", [
    lambda p: SGDMomentum(p, 0.1, 0.0, 0.9),
    lambda p: Adam(p, 1e-2),
], ids=["sgd_momentum", "adam"])
def test_state_dict_round_trip_continues_identically(factory):
    a_params = make_params()
    a = factory(a_params)
    for step in range(3):
        a.step(make_grads(step))
    state = a.state_dict()
    b_params = [p.clone() for p in a_params]
    b = factory(b_params)
    b.load_state_dict({k: ([t.clone() for t in v] if isinstance(v, list) else v) for k, v in state.items()})
    for step in range(3, 6):
        grads = make_grads(step)
        a.step([g.clone() for g in grads])
        b.step([g.clone() for g in grads])
    for x, y in zip(a_params, b_params):
        assert torch.equal(x, y)
