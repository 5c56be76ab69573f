import pytest
import torch
from torch import nn

import synthgap.train.gan as gan_module
from synthgap.config import GanConfig
from synthgap.errors import UserError
from synthgap.models.biggan import Discriminator, GanSpec, Generator
from synthgap.noise import image_seeds, normal_from
from synthgap.train.gan import list_checkpoints, load_generator, train_gan
from synthgap.train.state import ema_update

SPEC = GanSpec(3, 8, 1, z_dim=8, shared_dim=8, g_width=4, d_width=4, depth=1, attention_resolution=0)
CFG = GanConfig(z_dim=8, shared_dim=8, g_width=4, d_width=4, depth=1, attention_resolution=0, epochs=4,
                batch_size=8, d_steps=2, ema_start=2, ema_decay=0.9, checkpoint_every=2, state_every=1)


def toy_data(n=24):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 3


def test_paper_size_networks_shapes():
    spec = GanSpec(10, 32, 3)
    g, d = Generator(spec), Discriminator(spec)
    x = g(torch.randn(2, 128), torch.tensor([1, 2]))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1 and d(x, torch.tensor([1, 2])).shape == (2,)


def test_ema_arithmetic():
    a, b = Generator(SPEC), Generator(SPEC)
    before = [p.detach().clone() for p in a.parameters()]
    ema_update(a, b, decay=0.75)
    for old, new, target in zip(before, a.parameters(), b.parameters()):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * target)
    ema_update(a, b, decay=0.0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_ema_averages_float_buffers_and_copies_integer_ones():
    def net(mean, var, tracked):
        module = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        bn = module[1]
        bn.running_mean.copy_(torch.tensor(mean)), bn.running_var.copy_(torch.tensor(var))
        bn.num_batches_tracked.fill_(tracked)
        return module

    ema, model = net([0.0, 4.0], [1.0, 3.0], 5), net([2.0, 0.0], [5.0, 7.0], 9)
    ema_update(ema, model, decay=0.75, average_buffers=True)
    bn = ema[1]  # 0.75 * ema + 0.25 * model, worked by hand
    assert bn.running_mean.tolist() == [0.5, 3.0] and bn.running_var.tolist() == [2.0, 4.0]
    assert bn.num_batches_tracked.item() == 9
    ema, model = net([0.0, 4.0], [1.0, 3.0], 5), net([2.0, 0.0], [5.0, 7.0], 9)
    ema_update(ema, model, decay=0.75)  # the diffusion loop's behaviour: buffers copied
    assert ema[1].running_mean.tolist() == [2.0, 0.0] and ema[1].running_var.tolist() == [5.0, 7.0]


def test_every_real_batch_makes_d_steps_d_updates_then_one_g_update(monkeypatch, tmp_path):
    class CountingAdam(gan_module.Adam):
        made = []

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = 0
            CountingAdam.made.append(self)

        def step(self):
            self.calls += 1
            return super().step()

    monkeypatch.setattr(gan_module, "Adam", CountingAdam)
    x, y = toy_data(24)  # batch 8: 3 real batches per epoch
    cfg = CFG.model_copy(update={"epochs": 2, "d_steps": 3})
    history = train_gan(SPEC, x, y, cfg, seed=0, device="cpu", out_dir=tmp_path)
    opt_g, opt_d = CountingAdam.made
    assert (opt_g.calls, opt_d.calls) == (2 * 3, 2 * 3 * 3)
    adam_steps = [{s["step"].item() for s in opt.state.values()} for opt in (opt_g, opt_d)]
    assert adam_steps == [{6}, {18}]  # Adam's own count agrees
    assert [(r["g_steps"], r["d_steps"]) for r in history] == [(3, 9), (6, 18)]


def record_calls(monkeypatch, out_dir, x, y, **update):
    """Train briefly; the (images, labels) of every discriminator call and the latents of every generator call."""
    calls, latents = [], []

    class RecordingD(gan_module.Discriminator):
        def forward(self, images, labels):
            calls.append((images.detach().clone(), labels.clone()))
            return super().forward(images, labels)

    class RecordingG(gan_module.Generator):
        def forward(self, z, labels):
            latents.append(z.clone())
            return super().forward(z, labels)

    monkeypatch.setattr(gan_module, "Discriminator", RecordingD)
    monkeypatch.setattr(gan_module, "Generator", RecordingG)
    train_gan(SPEC, x, y, CFG.model_copy(update={"epochs": 1, **update}), seed=0, device="cpu", out_dir=out_dir)
    return calls, latents


@pytest.mark.parametrize("random_labels", [False, True])
def test_d_steps_reuse_the_real_batch_with_fresh_latents_and_the_chosen_labels(monkeypatch, tmp_path, random_labels):
    x, y = toy_data(24)
    calls, latents = record_calls(monkeypatch, tmp_path, x, y, d_steps=2, random_labels=random_labels)
    assert len(calls) == 3 * 5 and len(latents) == 3 * 3  # per real batch: (real, fake) twice, then the G pass
    assert len({tuple(z.flatten().tolist()) for z in latents}) == 9  # fresh latents for every pass
    for step in range(3):
        (real1, y1), (_, fy1), (real2, y2), (_, fy2), (_, gy) = calls[5 * step : 5 * step + 5]
        assert torch.equal(real1, real2) and torch.equal(y1, y2)
        same = [torch.equal(labels, y1) for labels in (fy1, fy2, gy)]
        assert same == ([False] * 3 if random_labels else [True] * 3)


@pytest.mark.parametrize("flip", [False, True])
def test_flip_mirrors_about_half_of_the_real_images(monkeypatch, tmp_path, flip):
    image = torch.zeros(1, 8, 8, dtype=torch.uint8)
    image[..., :3] = 255  # left three columns white: its mirror has the right three white
    x, y = image.expand(240, 1, 8, 8).contiguous(), torch.arange(240) % 3
    left, right = torch.full((1, 8, 8), -1.0), torch.full((1, 8, 8), -1.0)
    left[..., :3], right[..., 5:] = 1.0, 1.0
    calls, _ = record_calls(monkeypatch, tmp_path, x, y, batch_size=48, d_steps=1, epochs=2, flip=flip)
    real = torch.cat([images for images, _ in calls[::3]])  # per step: real, fake, G pass
    assert len(real) == 480
    is_mirrored = torch.tensor([torch.equal(r, right) for r in real])
    assert int(is_mirrored.sum()) + sum(torch.equal(r, left) for r in real) == 480
    per_batch = is_mirrored.view(10, 48).sum(1)
    if flip:  # a coin per image: binomial(480, 1/2) has sd 11, and every batch holds both
        assert abs(int(is_mirrored.sum()) - 240) < 45 and bool(((per_batch > 0) & (per_batch < 48)).all())
    else:
        assert not is_mirrored.any()


def test_one_gan_epoch_has_finite_losses_and_saves_ema_checkpoints(tmp_path):
    x, y = toy_data()
    history = train_gan(SPEC, x, y, CFG.model_copy(update={"epochs": 2}), seed=0, device="cpu", out_dir=tmp_path)
    assert all(torch.isfinite(torch.tensor([r["d_loss"], r["g_loss"]])).all() for r in history)
    assert sorted(list_checkpoints(tmp_path)) == [2]
    generator = load_generator(list_checkpoints(tmp_path)[2])
    assert not generator.training and generator(torch.randn(2, 8), torch.tensor([0, 1])).shape == (2, 1, 8, 8)


def test_killed_gan_run_resumes_to_the_same_weights(tmp_path):
    x, y = toy_data()
    full_dir, resumed_dir, state = tmp_path / "full", tmp_path / "resumed", tmp_path / "state.pt"
    full = train_gan(SPEC, x, y, CFG, seed=5, device="cpu", out_dir=full_dir)

    def crash(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(SPEC, x, y, CFG, seed=5, device="cpu", out_dir=resumed_dir, state_path=state, on_epoch=crash)
    resumed = train_gan(SPEC, x, y, CFG, seed=5, device="cpu", out_dir=resumed_dir, state_path=state)
    assert [r["d_loss"] for r in resumed] == [r["d_loss"] for r in full]
    a, b = torch.load(full_dir / "epoch_0004.pt", weights_only=True), torch.load(resumed_dir / "epoch_0004.pt", weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert not state.exists()


def test_foreign_checkpoint_is_a_user_error(tmp_path):
    torch.save({"spec": {"num_classes": 3}, "state_dict": {}}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="not a generator checkpoint"):
        load_generator(tmp_path / "bad.pt")


def test_noise_is_per_image_and_standard_normal():
    seeds = image_seeds(7, torch.arange(50_000))
    z = normal_from(seeds, 16)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert torch.equal(normal_from(seeds[100:110], 16), z[100:110])
    assert not torch.equal(normal_from(image_seeds(8, torch.arange(10)), 16), z[:10])
    assert seeds.unique().numel() == 50_000


def test_the_loop_averages_the_generators_buffers_into_the_ema_from_ema_start(monkeypatch, tmp_path):
    """Every G step updates the EMA with its float buffers averaged (BatchNorm statistics, spectral-norm
    vectors), as the official EMA over ``generator.weights`` does; a plain copy up to ``ema_start``."""
    calls = []

    def spy(ema, model, decay, *, average_buffers=False):
        calls.append((decay, average_buffers))
        ema_update(ema, model, decay, average_buffers=average_buffers)

    monkeypatch.setattr(gan_module, "ema_update", spy)
    x, y = toy_data()
    train_gan(SPEC, x, y, CFG.model_copy(update={"epochs": 1}), seed=0, device="cpu", out_dir=tmp_path)
    assert len(calls) == len(x) // CFG.batch_size  # one G step per real batch
    assert calls == [(0.0, True)] * CFG.ema_start + [(CFG.ema_decay, True)] * (len(calls) - CFG.ema_start)
