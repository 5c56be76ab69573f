import pytest
import torch

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
