"""synthgap.train.optim against torch.optim: the same weights bit for bit, the same state dicts, no torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from synthgap.train.optim import SGD, SGDW, Adam


def net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 4 * 4, 3), torch.nn.Linear(3, 3))


def train(model, opt, steps, start=0, lrs=(0.1, 0.1, 0.02)):
    """``steps`` steps on fixed random batches; the last layer gets no gradient on odd steps (a param
    without a gradient is skipped, its momentum kept); the lr changes between steps, as the schedules do."""
    for k in range(start, start + steps):
        g = torch.Generator().manual_seed(k)
        x, y = torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        for group in opt.param_groups:
            group["lr"] = lrs[k % len(lrs)]
        opt.zero_grad(set_to_none=True)
        out = model[3](model[2](model[1](model[0](x))))
        out = out if k % 2 else model[4](out)
        torch.nn.functional.cross_entropy(out, y).backward()
        opt.step()


OPTIMIZERS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True),
            lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, foreach=True)),
    "sgd_plain": (lambda p: torch.optim.SGD(p, lr=0.1), lambda p: SGD(p, lr=0.1)),
    "adam": (lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.5, 0.999), eps=1e-6),
             lambda p: Adam(p, lr=1e-3, betas=(0.5, 0.999), eps=1e-6)),
    "adam_wd": (lambda p: torch.optim.Adam(p, lr=2e-3, weight_decay=1e-2), lambda p: Adam(p, lr=2e-3, weight_decay=1e-2)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_weights_equal_torch_optims_bit_for_bit(name):
    theirs, ours = OPTIMIZERS[name]
    a, b = net(), net()
    train(a, theirs(a.parameters()), 6)
    train(b, ours(b.parameters()), 6)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(next(net().parameters()), next(b.parameters()))  # training moved the weights


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
def test_a_state_dict_moves_between_the_two_and_training_continues_identically(name, direction):
    theirs, ours = OPTIMIZERS[name]
    first, second = (theirs, ours) if direction == "torch_to_ours" else (ours, theirs)
    reference = net()
    opt = theirs(reference.parameters())
    train(reference, opt, 7)

    resumed = net()
    opt = first(resumed.parameters())
    train(resumed, opt, 4)
    saved = torch.load(_round_trip(opt.state_dict()), weights_only=True)  # as a resumable state file holds it
    opt = second(resumed.parameters())
    opt.load_state_dict(saved)
    train(resumed, opt, 3, start=4)
    for p, q in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def _round_trip(obj):
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_a_state_dict_of_other_parameters_is_refused():
    opt = SGD(net().parameters(), lr=0.1, momentum=0.9)
    other = SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="does not match"):
        opt.load_state_dict(other.state_dict())


def test_sgdw_shrinks_by_one_minus_decay_then_steps_on_the_gradient_alone():
    # p1 = 1 * 0.99 - 0.1 * 3 = 0.69 (no momentum): the decay is not scaled by the lr
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = SGDW([p], decay=0.01, lr=0.1)
    p.grad = torch.tensor([3.0], dtype=torch.float64)
    opt.step()
    assert p.item() == pytest.approx(0.69, abs=1e-15)


def test_adam_counts_its_steps_per_parameter_on_the_cpu_as_torch_does():
    model = net()
    opt = Adam(model.parameters(), lr=1e-3)
    train(model, opt, 4)
    steps = {name: opt.state[p]["step"] for name, p in model.named_parameters() if p in opt.state}
    assert steps["0.weight"].item() == 4 and steps["4.weight"].item() == 2  # the last layer: even steps only
    assert all(s.device.type == "cpu" and s.dtype == torch.float32 for s in steps.values())


def test_building_stepping_and_saving_do_not_import_torch_dynamo():
    code = (
        "import sys, torch\n"
        "from synthgap.train.optim import SGD, Adam\n"
        "m = torch.nn.Linear(3, 2)\n"
        "for opt in (SGD(m.parameters(), lr=0.1, momentum=0.9, foreach=True), Adam(m.parameters())):\n"
        "    m(torch.ones(1, 3)).sum().backward(); opt.step(); opt.zero_grad(); opt.load_state_dict(opt.state_dict())\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
        "torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"  # torch.optim's own class does import it: the check can see it
