"""Training loop of the class-conditional GAN (hinge loss, Adam, EMA of G), as the official GaFi ``train_step``.

Every real batch of ``batch_size`` images (optionally mirrored left-right, ``flip``) makes ``d_steps``
discriminator updates on that same batch, each with fresh latents, and then one generator update: one
generator step per real batch. The fake labels of every step are the real batch's labels, or uniform random
labels drawn afresh for each step with ``random_labels``. After every generator step the EMA generator is
updated over all its weights, floating-point buffers (batch-norm statistics, spectral-norm vectors) included:
a plain copy up to generator step ``ema_start``, an average with ``ema_decay`` after it. The EMA generator is
saved as ``<out_dir>/epoch_XXXX.pt`` every ``checkpoint_every`` epochs: only EMA generators are used downstream.

All randomness of epoch ``e`` (shuffling, flips, latents, fake labels) comes from a generator seeded with
``derive_seed(seed, "gan", e)``, and the resumable state (G, D, EMA, both optimizers, step counters,
history) is written atomically every ``state_every`` epochs, so a killed run resumes to exactly the weights of
an uninterrupted one on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from synthgap.distributed import all_sum, barrier, current, is_main, wrap
from synthgap.checkpoint import load_torch, save_torch
from synthgap.config import GanConfig
from synthgap.errors import UserError
from synthgap.images import to_unit_range
from synthgap.models.biggan import Discriminator, GanSpec, Generator
from synthgap.seeding import derive_seed, torch_generator
from synthgap.staging import remove_after_commit
from synthgap.train.optim import Adam
from synthgap.train.state import ema_update, load_state, restore, save_state


def checkpoint_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / f"epoch_{epoch:04d}.pt"


def list_checkpoints(out_dir: Path) -> dict[int, Path]:
    """Saved EMA generators by epoch."""
    return {int(p.stem.split("_")[1]): p for p in sorted(Path(out_dir).glob("epoch_*.pt"))}


def save_generator(generator: Generator, path: Path, epoch: int) -> None:
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    save_torch({"spec": asdict(generator.spec), "epoch": epoch, "state_dict": state}, path)


def load_generator(path: Path, device: torch.device | str = "cpu") -> Generator:
    payload = load_torch(path, device, fix="retrain it with `dvc repro train_generator`")
    try:
        spec = GanSpec(**payload["spec"])
        generator = Generator(spec)
        generator.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is not a generator checkpoint of this version ({str(err).splitlines()[0]})",
                        "retrain it with `dvc repro train_generator`") from err
    return generator.to(device).eval().requires_grad_(False)


def train_gan(
    spec: GanSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: GanConfig,
    *,
    seed: int,
    device: torch.device | str,
    out_dir: Path,
    state_path: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    desc: str = "train_generator",
) -> list[dict]:
    """Train on uint8 images ``x`` (N, C, H, W) with labels ``y``; returns one record per epoch."""
    device = torch.device(device)
    x, y = x.to(device), y.to(device)
    torch.manual_seed(derive_seed(seed, "gan", "init"))
    generator, discriminator = Generator(spec).to(device), Discriminator(spec).to(device)
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    adam = {"betas": tuple(cfg.betas), "eps": cfg.eps}
    opt_g = Adam(generator.parameters(), lr=cfg.lr_g, **adam)
    opt_d = Adam(discriminator.parameters(), lr=cfg.lr_d, **adam)
    fingerprint = {"spec": asdict(spec), "config": cfg.model_dump(mode="json"), "seed": seed, "n": len(y)}
    start_epoch, d_step, g_step, history = 0, 0, 0, []
    state = load_state(state_path, fingerprint, device)
    if state is not None:
        restore(state, generator=generator, discriminator=discriminator, ema=ema, opt_g=opt_g, opt_d=opt_d)
        start_epoch, d_step, g_step, history = state["epoch"], state["d_step"], state["g_step"], list(state["history"])
        tqdm.write(f"{desc}: resuming from {state_path} at epoch {start_epoch}")

    n, batch = len(y), min(cfg.batch_size, len(y))
    steps = n // batch
    dist = current()  # under torchrun: each process takes its slice of every global batch and latent draw
    g_net, d_net = wrap(generator, device), wrap(discriminator, device)
    generator.train()
    discriminator.train()

    def latents(gen: torch.Generator, real_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh latents and the fake labels of one step (drawn for the global batch, then sharded)."""
        z = dist.shard(torch.randn(batch, spec.z_dim, device=device, generator=gen))
        if not cfg.random_labels:
            return z, real_y
        return z, dist.shard(torch.randint(0, spec.num_classes, (batch,), device=device, generator=gen))

    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, disable=None, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        gen = torch_generator(derive_seed(seed, "gan", epoch), device)
        order = torch.randperm(n, device=device, generator=gen)
        d_sum, g_sum = torch.zeros((), device=device), torch.zeros((), device=device)
        for i in range(steps):
            idx = dist.shard(order[i * batch : (i + 1) * batch])
            real, real_y = x[idx], y[idx]
            if cfg.flip:
                mirror = dist.shard(torch.rand(batch, device=device, generator=gen) < 0.5)
                real = torch.where(mirror[:, None, None, None], real.flip(-1), real)
            real = to_unit_range(real)
            for _ in range(cfg.d_steps):
                z, fake_y = latents(gen, real_y)
                with torch.no_grad():
                    fake = generator(z, fake_y)
                if dist.world > 1:  # one DDP forward per backward: real and fake together
                    scores = d_net(torch.cat([real, fake]), torch.cat([real_y, fake_y]))
                    d_real, d_fake = scores[: len(real)], scores[len(real) :]
                else:
                    d_real, d_fake = discriminator(real, real_y), discriminator(fake, fake_y)
                d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                d_sum += d_loss.detach()
                d_step += 1
            z, fake_y = latents(gen, real_y)
            g_loss = -discriminator(g_net(z, fake_y), fake_y).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            g_step += 1
            ema_update(ema, generator, cfg.ema_decay if g_step > cfg.ema_start else 0.0, average_buffers=True)
            g_sum += g_loss.detach()

        d_sum, g_sum = all_sum(d_sum) / dist.world, all_sum(g_sum) / dist.world
        record = {
            "epoch": epoch + 1,
            "d_loss": d_sum.item() / max(steps * cfg.d_steps, 1),
            "g_loss": g_sum.item() / max(steps, 1),
            "g_steps": g_step,
            "d_steps": d_step,
            "seconds": time.perf_counter() - t0,
        }
        if not (math.isfinite(record["d_loss"]) and math.isfinite(record["g_loss"])):
            kept = f"; the last good state is kept in {state_path}" if state_path is not None and state_path.exists() else ""
            raise UserError(f"{desc}: GAN training diverged (non-finite loss) in epoch {epoch + 1}, "
                            f"generator step {g_step}{kept}", "lower gafi.gan.lr_g / lr_d")
        history.append(record)
        bar.set_postfix(d_loss=round(record["d_loss"], 3), g_loss=round(record["g_loss"], 3))
        last = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.checkpoint_every == 0 or last:
            save_generator(ema, checkpoint_path(out_dir, epoch + 1), epoch + 1)
        if state_path is not None and ((epoch + 1) % cfg.state_every == 0 or last):
            save_state(state_path, fingerprint, epoch=epoch + 1, d_step=d_step, g_step=g_step, history=history,
                       generator=generator, discriminator=discriminator, ema=ema, opt_g=opt_g, opt_d=opt_d)
        if on_epoch is not None:
            on_epoch(record)
    if state_path is not None and is_main():  # kept until the stage's outputs are in place (a late failure resumes)
        remove_after_commit(state_path)
    barrier()  # everything rank 0 wrote exists before any process goes on
    return history
