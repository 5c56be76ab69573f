import math

import numpy as np
import pytest
import torch

from synthgap.diffusion.edm import Denoiser, EdmConfig, heun_sample, loss_weight, preconditioning, time_steps
from synthgap.models.unet import UNet, UNetSpec
from synthgap.noise import image_seeds
from synthgap.train.diffusion import load_denoiser, save_denoiser, train_diffusion

SPEC = UNetSpec(3, 8, 1, width=8, channel_mult=(1, 2), blocks=1, attention_resolution=0, dropout=0.0)


def test_preconditioning_matches_table_1():
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, 0.5)
    for s, a, b, c, d in zip(sigma.tolist(), c_skip, c_out, c_in, c_noise):
        assert a.item() == pytest.approx(0.25 / (s**2 + 0.25))
        assert b.item() == pytest.approx(s * 0.5 / math.sqrt(s**2 + 0.25))
        assert c.item() == pytest.approx(1 / math.sqrt(s**2 + 0.25))
        assert d.item() == pytest.approx(math.log(s) / 4)
    assert loss_weight(torch.tensor(0.5), 0.5).item() == pytest.approx((0.25 + 0.25) / 0.0625)


class Constant(torch.nn.Module):
    """F(x, c_noise, y) = k: the denoiser is then exactly c_skip x + c_out k."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x, c_noise, labels):
        return torch.full_like(x, self.k)


def test_denoiser_combines_skip_and_network_output():
    x, sigma = torch.randn(2, 1, 4, 4), torch.tensor([0.3, 2.0])
    out = Denoiser(Constant(0.7))(x, sigma, torch.zeros(2, dtype=torch.long))
    c_skip, c_out, _, _ = preconditioning(sigma.view(-1, 1, 1, 1), 0.5)
    torch.testing.assert_close(out, c_skip * x + c_out * 0.7)


def test_time_steps_follow_eq_5():
    t = time_steps(18, EdmConfig()).numpy()
    assert len(t) == 19 and t[0] == pytest.approx(80.0) and t[17] == pytest.approx(0.002) and t[18] == 0
    i = 7
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert t[i] == pytest.approx(expected) and np.all(np.diff(t) < 0)


class Oracle(torch.nn.Module):
    """An ideal denoiser for data concentrated at one point mu: D(x; sigma) = mu, for any x."""

    def __init__(self, mu):
        super().__init__()
        self.mu = mu

    def forward(self, x, sigma, labels):
        return torch.full_like(x, self.mu)


def test_heun_sampler_reaches_the_data_point_and_uses_per_image_seeds():
    labels = torch.zeros(6, dtype=torch.long)
    seeds = image_seeds(0, torch.arange(6))
    out = heun_sample(Oracle(0.3), labels, seeds, (1, 2, 2), steps=18)
    torch.testing.assert_close(out, torch.full_like(out, 0.3), atol=1e-6, rtol=0)
    net = Denoiser(UNet(SPEC)).eval()
    a = heun_sample(net, labels, seeds, (1, 8, 8), steps=4)
    b = torch.cat([heun_sample(net, labels[:2], seeds[:2], (1, 8, 8), steps=4), heun_sample(net, labels[2:], seeds[2:], (1, 8, 8), steps=4)])
    torch.testing.assert_close(a, b)  # a set does not depend on how it is batched


def toy_images(n=48):
    y = torch.arange(n) % 3
    x = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 3] = 230
    return x, y


def test_tiny_model_loss_falls_and_resume_is_exact(tmp_path):
    x, y = toy_images()
    kwargs = dict(steps=100, batch_size=16, lr=2e-3, ema_decay=0.9, seed=1, device="cpu", log_every=25)
    ema, history = train_diffusion(SPEC, x, y, **kwargs)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]

    state = tmp_path / "state.pt"

    def crash(record):
        if record["step"] == 75:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_diffusion(SPEC, x, y, state_every=25, state_path=state, on_log=crash, **kwargs)
    resumed, _ = train_diffusion(SPEC, x, y, state_every=25, state_path=state, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), resumed.state_dict().values()))
    save_denoiser(resumed, tmp_path / "edm.pt", 100)
    back = load_denoiser(tmp_path / "edm.pt")
    assert back.net.spec == SPEC
