import math

import numpy as np
import pytest
import torch

from synthgap.diffusion.edm import Denoiser, EdmConfig, heun_sample, loss_weight, preconditioning, time_steps
from synthgap.models.unet import UNet, UNetSpec
from synthgap.noise import image_seeds, normal_from
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


class Recorder(torch.nn.Module):
    """F(x_in, c_noise, y) = 2 x_in + c_noise, keeping its inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x_in, c_noise, labels):
        self.calls.append((x_in.clone(), c_noise.clone(), labels.clone()))
        return 2 * x_in + c_noise.view(-1, 1, 1, 1)


@pytest.mark.parametrize("sigma_data", [0.5, 0.3])
@pytest.mark.parametrize("sigma_shape", [(2,), (2, 1, 1, 1)])  # the sampler's and the loss's layouts
def test_denoiser_feeds_the_network_c_in_x_and_c_noise_and_combines_with_c_skip_c_out(sigma_data, sigma_shape):
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas, labels = [0.3, 2.0], torch.tensor([4, 7])
    net = Recorder()
    out = Denoiser(net, sigma_data)(x, torch.tensor(sigmas, dtype=torch.float64).view(sigma_shape), labels)
    (x_in, c_noise, seen_labels), = net.calls
    assert c_noise.shape == (2,) and torch.equal(seen_labels, labels)
    for i, s in enumerate(sigmas):  # Karras et al. 2022, Table 1, written out
        c_in = 1 / math.sqrt(s**2 + sigma_data**2)
        c_skip = sigma_data**2 / (s**2 + sigma_data**2)
        c_out = s * sigma_data / math.sqrt(s**2 + sigma_data**2)
        torch.testing.assert_close(x_in[i], c_in * x[i])
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4)
        torch.testing.assert_close(out[i], c_skip * x[i] + c_out * (2 * c_in * x[i] + math.log(s) / 4))


def test_time_steps_follow_eq_5():
    t = time_steps(18, EdmConfig()).numpy()
    assert len(t) == 19 and t[0] == pytest.approx(80.0) and t[17] == pytest.approx(0.002) and t[18] == 0
    i = 7
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert t[i] == pytest.approx(expected) and np.all(np.diff(t) < 0)


MU, S = 0.1, 0.2  # data N(MU, S^2 I), chosen so every sample stays inside the sampler's [-1, 1] clamp


class GaussianOracle(torch.nn.Module):
    """The exact denoiser of N(MU, S^2 I): E[x0 | x0 + sigma n = x] = MU + (x - MU) S^2 / (S^2 + sigma^2)."""

    def forward(self, x, sigma, labels):
        var = sigma.double().view(-1, 1, 1, 1) ** 2
        return MU + (x.double() - MU) * S**2 / (S**2 + var)


def test_heun_sampler_is_second_order_on_gaussian_data():
    """With this denoiser the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma = (x - MU) sigma /
    (S^2 + sigma^2) has x(sigma) - MU = (x_T - MU) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_max^2). Algorithm 1
    follows it with Heun steps down to sigma_min and ends with one Euler step sigma_min -> 0, which here is
    x + (0 - sigma_min) (x - D) / sigma_min = D(x; sigma_min) = MU + (x - MU) S^2 / (S^2 + sigma_min^2); so the
    sampler's exact end point is MU + (x_T - MU) S^2 / sqrt((S^2 + sigma_max^2)(S^2 + sigma_min^2)) (it differs
    from the ODE's own end point, factor S / sqrt(S^2 + sigma_max^2), by ~3e-5 here)."""
    cfg = EdmConfig()
    labels, seeds = torch.zeros(8, dtype=torch.long), image_seeds(0, torch.arange(8))
    x_t = normal_from(seeds, 16).double().view(-1, 1, 4, 4) * cfg.sigma_max  # the sampler's initial noise
    end = MU + (x_t - MU) * S**2 / math.sqrt((S**2 + cfg.sigma_max**2) * (S**2 + cfg.sigma_min**2))
    errors = [(heun_sample(GaussianOracle(), labels, seeds, (1, 4, 4), steps=n, cfg=cfg).double() - end).abs().max().item()
              for n in (8, 16, 32, 64)]
    assert errors[-1] < 4e-3  # measured 2.6e-3
    ratios = np.array(errors[:-1]) / np.array(errors[1:])  # measured 5.1, 4.6, 4.3: second order; Euler gives ~2
    assert np.all((ratios > 3.5) & (ratios < 6.5)), (errors, ratios)


def test_heun_sampler_uses_per_image_seeds():
    labels = torch.zeros(6, dtype=torch.long)
    seeds = image_seeds(0, torch.arange(6))
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


def killed_and_resumed(spec, x, y, kwargs, state, crash_at: int):
    """The EMA denoiser of a run interrupted after logging step ``crash_at`` and then rerun (states every
    ``log_every`` steps)."""
    def crash(record):
        if record["step"] == crash_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_diffusion(spec, x, y, state_every=kwargs["log_every"], state_path=state, on_log=crash, **kwargs)
    return train_diffusion(spec, x, y, state_every=kwargs["log_every"], state_path=state, **kwargs)[0]


def test_tiny_model_loss_falls_and_resume_is_exact(tmp_path):
    x, y = toy_images()
    kwargs = dict(steps=100, batch_size=16, lr=2e-3, ema_decay=0.9, seed=1, device="cpu", log_every=25)
    ema, history = train_diffusion(SPEC, x, y, **kwargs)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    resumed = killed_and_resumed(SPEC, x, y, kwargs, tmp_path / "state.pt", 75)
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), resumed.state_dict().values()))
    save_denoiser(resumed, tmp_path / "edm.pt", 100)
    back = load_denoiser(tmp_path / "edm.pt")
    assert back.net.spec == SPEC


def test_ema_half_life_and_its_ramp_up_follow_edm():
    """beta = 0.5 ** (batch / half-life in images), the half-life capped at ratio x images seen (EDM's
    training_loop.py); hand-computed values."""
    from synthgap.train.diffusion import ema_beta, lr_factor

    assert ema_beta(0, 512, 0.99, 500, 0.05) == 0.0  # nothing seen: the average is the network
    assert ema_beta(10, 512, 0.99, 500, 0.05) == pytest.approx(0.25)  # cap 5120 x 0.05 = 256 images: 0.5 ** 2
    assert ema_beta(10**6, 512, 0.99, 500, 0.05) == pytest.approx(0.5 ** (512 / 500_000))  # ramp over
    assert ema_beta(3, 512, 0.99, 500, None) == pytest.approx(0.5 ** (512 / 500_000))
    assert ema_beta(3, 512, 0.99, None, 0.05) == 0.99  # no half-life: the per-step decay
    assert lr_factor(0, 512, 10_000) == 0.0 and lr_factor(9765, 512, 10_000) == pytest.approx(9765 * 512 / 1e7)
    assert lr_factor(10**5, 512, 10_000) == 1.0 and lr_factor(0, 512, 0) == 1.0


def test_edm_recipe_trains_with_augment_labels_and_resumes_exactly(tmp_path):
    """The recipe's parts together on a toy set: the network gets the 9 augment labels (a network without
    them is refused), the loss falls, and a killed run resumes to the uninterrupted weights."""
    from synthgap.diffusion.augment import AUGMENT_DIM, AugmentPipe

    x, y = toy_images()
    spec = UNetSpec(3, 8, 1, width=8, channel_mult=(1, 2), blocks=1, attention_resolution=0, dropout=0.0,
                    augment_dim=AUGMENT_DIM)
    kwargs = dict(steps=60, batch_size=16, lr=2e-3, ema_decay=0.9, seed=1, device="cpu", log_every=20,
                  ema_halflife_kimg=0.5, ema_rampup_ratio=0.05, lr_rampup_kimg=0.2, augment=AugmentPipe(0.3, False))
    with pytest.raises(ValueError, match="augment_dim"):
        train_diffusion(SPEC, x, y, **kwargs)
    ema, history = train_diffusion(spec, x, y, **kwargs)
    assert history[-1]["loss"] < history[0]["loss"]
    resumed = killed_and_resumed(spec, x, y, kwargs, tmp_path / "state.pt", 40)
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), resumed.state_dict().values()))
    save_denoiser(resumed, tmp_path / "edm.pt", 60)
    assert load_denoiser(tmp_path / "edm.pt").net.spec.augment_dim == AUGMENT_DIM


def test_augment_labels_reach_the_network_and_zero_labels_are_the_clean_mode():
    from synthgap.diffusion.augment import AUGMENT_DIM

    torch.manual_seed(0)
    net = UNet(UNetSpec(3, 8, 1, width=8, channel_mult=(1,), blocks=1, attention_resolution=0, dropout=0.0,
                        augment_dim=AUGMENT_DIM)).eval()
    with torch.no_grad():  # residual branches and the output layer start at zero: give every weight a value
        for param in net.parameters():
            param.normal_(0, 0.3)
    x, c_noise, labels = torch.randn(2, 1, 8, 8), torch.zeros(2), torch.tensor([0, 1])
    clean = net(x, c_noise, labels)
    torch.testing.assert_close(net(x, c_noise, labels, torch.zeros(2, AUGMENT_DIM)), clean)
    assert not torch.allclose(net(x, c_noise, labels, torch.ones(2, AUGMENT_DIM)), clean)
