"""Training loop of the class-conditional EDM denoiser (Adam, EMA, resumable state).

Training length is counted in optimizer steps (base subsets can hold a few hundred images). Step ``k`` draws
its batch (without replacement), noise levels, augmentations and noise from a generator seeded with
``derive_seed(seed, "edm", k)``; the state (network, EMA, optimizer, step, history) is written atomically every
``state_every`` steps, so a killed run resumes to exactly the weights of an uninterrupted one on CPU.

EDM's recipe (``training_loop.py``), each part optional: the augmentation pipe (``augment``), the EMA by
half-life in images with a ramp-up (:func:`ema_beta`) instead of a fixed decay, and the learning-rate ramp
(:func:`lr_factor`); with ``cur_nimg`` the images seen before step ``k``, ``k * batch_size``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from synthgap.checkpoint import load_torch, save_torch
from synthgap.diffusion.augment import AugmentPipe
from synthgap.diffusion.edm import Denoiser, EdmConfig, edm_loss
from synthgap.distributed import all_sum, barrier, current, is_main, wrap
from synthgap.errors import UserError
from synthgap.images import to_unit_range
from synthgap.models.unet import UNet, UNetSpec
from synthgap.seeding import derive_seed, torch_generator
from synthgap.staging import remove_after_commit
from synthgap.train.optim import Adam
from synthgap.train.state import ema_update, load_state, restore, save_state


def ema_beta(step: int, batch_size: int, decay: float, halflife_kimg: float | None,
             rampup_ratio: float | None) -> float:
    """The EMA weight of the old average after ``step``: ``decay`` without a half-life; else EDM's
    ``0.5 ** (batch / h)``, ``h`` the half-life in images (``halflife_kimg * 1000``), capped by ``rampup_ratio``
    times the images seen so far (0 at step 0: the average starts as the network)."""
    if halflife_kimg is None:
        return decay
    halflife = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife = min(halflife, step * batch_size * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife, 1e-8))


def lr_factor(step: int, batch_size: int, rampup_kimg: float) -> float:
    """EDM's linear learning-rate ramp over the first ``rampup_kimg`` thousand images (1 without a ramp)."""
    return min(step * batch_size / max(rampup_kimg * 1000, 1e-8), 1.0) if rampup_kimg > 0 else 1.0


def save_denoiser(denoiser: Denoiser, path: Path, step: int) -> None:
    state = {k: v.detach().cpu() for k, v in denoiser.net.state_dict().items()}
    spec = asdict(denoiser.net.spec)
    save_torch({"spec": {**spec, "channel_mult": list(spec["channel_mult"])}, "step": step, "state_dict": state}, path)


def load_denoiser(path: Path, device: torch.device | str = "cpu") -> Denoiser:
    payload = load_torch(path, device, fix="retrain it with `dvc repro train_diffusion`")
    try:
        spec = UNetSpec(**{**payload["spec"], "channel_mult": tuple(payload["spec"]["channel_mult"])})
        net = UNet(spec)
        net.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is not a diffusion checkpoint of this version ({str(err).splitlines()[0]})",
                        "retrain it with `dvc repro train_diffusion`") from err
    return Denoiser(net).to(device).eval().requires_grad_(False)


def train_diffusion(
    spec: UNetSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    seed: int,
    device: torch.device | str,
    state_every: int = 0,
    log_every: int = 100,
    state_path: Path | None = None,
    on_log: Callable[[dict], None] | None = None,
    edm: EdmConfig = EdmConfig(),
    desc: str = "train_diffusion",
    ema_halflife_kimg: float | None = None,
    ema_rampup_ratio: float | None = None,
    lr_rampup_kimg: float = 0.0,
    augment: AugmentPipe | None = None,
) -> tuple[Denoiser, list[dict]]:
    """Train on uint8 images ``x`` (N, C, H, W) with labels ``y``; returns the EMA denoiser and the loss log.
    The network must take ``augment``'s labels (``spec.augment_dim``) when ``augment`` is given."""
    if (augment is not None) != bool(spec.augment_dim):
        raise ValueError("augmentation needs a network with augment_dim = 9 and only then")
    device = torch.device(device)
    if device.type == "cuda":  # as EDM: full fp32 convolutions and matmuls (no TF32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    x, y = x.to(device), y.to(device)
    torch.manual_seed(derive_seed(seed, "edm", "init"))
    denoiser = Denoiser(UNet(spec), edm.sigma_data).to(device)
    ema = copy.deepcopy(denoiser).eval().requires_grad_(False)
    opt = Adam(denoiser.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    fingerprint = {"spec": asdict(spec), "steps": steps, "batch": batch_size, "lr": lr, "ema": ema_decay,
                   "seed": seed, "n": len(y), "edm": asdict(edm)}
    if ema_halflife_kimg is not None or lr_rampup_kimg or augment is not None:  # (older states stay valid)
        fingerprint |= {"ema_halflife_kimg": ema_halflife_kimg, "ema_rampup_ratio": ema_rampup_ratio,
                        "lr_rampup_kimg": lr_rampup_kimg, "augment": None if augment is None else asdict(augment)}
    start, history = 0, []
    state = load_state(state_path, fingerprint, device)
    if state is not None:
        restore(state, denoiser=denoiser, ema=ema, optimizer=opt)
        start, history = state["step"], list(state["history"])
        tqdm.write(f"{desc}: resuming from {state_path} at step {start}")
    batch = min(batch_size, len(y))
    dist = current()  # under torchrun: each process computes the loss of its slice of every global batch
    net = wrap(denoiser, device)
    denoiser.train()
    running, count, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    for step in tqdm(range(start, steps), desc=desc, disable=None, initial=start, total=steps):
        gen = torch_generator(derive_seed(seed, "edm", step), device)
        idx = torch.randperm(len(y), device=device, generator=gen)[:batch]
        images = to_unit_range(x[idx])
        loss = edm_loss(net, images, y[idx], edm, gen, shard=dist.shard if dist.world > 1 else None, augment=augment)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for param in denoiser.parameters():  # as EDM: a stray non-finite gradient does not poison the weights
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        for group in opt.param_groups:
            group["lr"] = lr * lr_factor(step, batch, lr_rampup_kimg)
        opt.step()
        ema_update(ema, denoiser, ema_beta(step, batch, ema_decay, ema_halflife_kimg, ema_rampup_ratio))
        running += all_sum(loss.detach()) / dist.world
        count += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            record = {"step": done, "loss": running.item() / count, "seconds": time.perf_counter() - t0}
            if not math.isfinite(record["loss"]):
                kept = f"; the last good state is kept in {state_path}" if state_path is not None and state_path.exists() else ""
                raise UserError(f"{desc}: diffusion training diverged (non-finite loss) before step {done}{kept}",
                                "lower equivalence.diffusion.lr")
            history.append(record)
            running, count, t0 = torch.zeros((), device=device), 0, time.perf_counter()
            if on_log is not None:
                on_log(record)
        if state_path is not None and state_every and (done % state_every == 0 or done == steps):
            save_state(state_path, fingerprint, step=done, history=history, denoiser=denoiser, ema=ema, optimizer=opt)
    if state_path is not None and is_main():  # kept until the stage's outputs are in place (a late failure resumes)
        remove_after_commit(state_path)
    barrier()  # everything rank 0 wrote exists before any process goes on
    return ema, history
