"""The training options of ``train_unet`` (issue 16): random flip on/off (``realfake.flip``), AdamW weight decay of
the LoRA weights and gradient-norm clipping (``realfake.finetune.weight_decay`` / ``max_grad_norm``)."""

import copy

import pytest
import torch

from synthgap.config import RealFakeConfig
from synthgap.realfake.base_model import build_tiny
from synthgap.realfake.finetune import LoraSpec, UnetTraining, train_unet
from synthgap.realfake.pipeline import finetune_settings

WORDS = ["photo", "of", "digit", "zero"]
PROMPT = "photo of digit zero"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny(8, WORDS, tmp_path_factory.mktemp("tok"), seed=0, width=16, text_width=16)


def left_bright(n: int = 16) -> torch.Tensor:
    """Images bright on the left half, black on the right: a mirrored one is bright on the right."""
    x = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    x[..., :4] = 255
    return x


def fed_latents(base, monkeypatch, settings: UnetTraining) -> torch.Tensor:
    """The clean latents that ``train_unet`` noises, every step concatenated, with a VAE whose posterior is a
    point mass on the image itself (2 x 2 average-pooled, first channel repeated): latents show the image."""
    from types import SimpleNamespace

    model = copy.deepcopy(base)

    def encode(pixels):
        mean = torch.nn.functional.avg_pool2d(pixels[:, :1], 2).expand(-1, 4, -1, -1)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean, std=torch.zeros_like(mean)))

    monkeypatch.setattr(model.vae, "encode", encode, raising=False)
    seen, add_noise = [], model.scheduler.add_noise
    monkeypatch.setattr(model.scheduler, "add_noise",
                        lambda latents, noise, t: seen.append(latents.detach().clone()) or add_noise(latents, noise, t))
    train_unet(model, left_bright(), [PROMPT] * 16, None, settings, seed=3, log_every=1)
    return torch.cat(seen) / model.vae.config.scaling_factor


@pytest.mark.parametrize("lora", [LoraSpec(), None], ids=["lora", "pretraining"])
def test_flip_false_feeds_no_mirrored_image_and_true_about_half(base, monkeypatch, lora):
    kw = dict(steps=8, batch_size=16, lr=1e-3, resolution=8, lora=lora, guidance="none")
    for flip in (False, True):
        latents = fed_latents(base, monkeypatch, UnetTraining(flip=flip, **kw))
        assert len(latents) == 8 * 16
        left, right = latents[..., :2].mean((1, 2, 3)), latents[..., 2:].mean((1, 2, 3))
        assert torch.all((left - right).abs() > 1.5)  # each image is either the original or its mirror
        mirrored = (right > left).float().mean().item()
        if flip:
            assert 0.35 < mirrored < 0.65, mirrored
        else:
            assert mirrored == 0.0


def test_realfake_flip_reaches_the_finetune_settings_and_defaults_to_the_released_code():
    assert RealFakeConfig().flip is True  # released code: --random_flip
    for flip in (False, True):
        cfg = RealFakeConfig(flip=flip)
        assert all(finetune_settings(cfg, v).flip is flip for v in ("plain", "full"))
        assert finetune_settings(cfg, "full", steps=3).flip is flip  # the privacy shadows' finetunes


class Recording(torch.optim.AdamW):
    """AdamW that records, before every step, the global gradient norm and a copy of the weights."""

    last = None

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.norms, self.before = [], []
        Recording.last = self

    def step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        self.before.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


def one_lora_step(base, monkeypatch, **kw):
    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    model = copy.deepcopy(base)
    tokens = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))  # a guidance projection trains too
    settings = UnetTraining(resolution=8, batch_size=16, flip=False, **kw)
    train_unet(model, left_bright(), [PROMPT] * 16, tokens, settings, seed=5, log_every=1)
    opt = Recording.last
    after = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    return opt, after


def test_max_grad_norm_bounds_the_gradient_of_every_step_and_null_does_not_clip(base, monkeypatch):
    clipped, _ = one_lora_step(base, monkeypatch, steps=2, lr=1e-3, max_grad_norm=1e-4)
    free, _ = one_lora_step(base, monkeypatch, steps=2, lr=1e-3, max_grad_norm=None)
    assert len(clipped.norms) == 2 and all(n <= 1e-4 * (1 + 1e-4) for n in clipped.norms)
    assert free.norms[0] > 1e-3  # the same first batch unclipped: a gradient well above the bound
    assert clipped.norms[0] == pytest.approx(1e-4, rel=1e-4)  # scaled down to the bound, not zeroed


def test_weight_decay_shrinks_the_lora_and_projection_weights_by_lr_times_decay(base, monkeypatch):
    lr, decay = 0.1, 0.5
    plain, after_plain = one_lora_step(base, monkeypatch, steps=1, lr=lr, weight_decay=0.0, max_grad_norm=None)
    decayed, after_decayed = one_lora_step(base, monkeypatch, steps=1, lr=lr, weight_decay=decay, max_grad_norm=None)
    assert decayed.param_groups[0]["weight_decay"] == decay
    start = decayed.before[0]
    assert all(torch.equal(a, b) for a, b in zip(plain.before[0], start))  # same start, same gradient
    assert sum(p.abs().sum().item() for p in start) > 0
    # AdamW's first step: p - lr * decay * p - lr * adam(g); only the decay term differs between the two runs
    for p0, a, b in zip(start, after_plain, after_decayed):
        torch.testing.assert_close(a - b, lr * decay * p0, atol=1e-6, rtol=1e-4)


def test_finetune_defaults_are_the_released_codes_and_reach_the_training():
    ft = RealFakeConfig().finetune
    assert (ft.weight_decay, ft.max_grad_norm) == (1e-2, 1.0)
    cfg = RealFakeConfig(finetune={"weight_decay": 0.25, "max_grad_norm": None})
    settings = finetune_settings(cfg, "full")
    assert (settings.weight_decay, settings.max_grad_norm) == (0.25, None)
