"""The one classifier training loop used by every paper.

Images stay uint8 (N, C, H, W) tensors on the training device; each batch is indexed, augmented and
normalised there. The evaluation sets are scored after every epoch (``eval_every_epoch``, for learning curves and best-epoch
selection) or only after the last one. The training set may be a fixed pair of tensors or a function ``epoch -> (x, y)`` that is
called at the start of every epoch, which is how GaFi's Dynamic Dataset Recycle swaps in a regenerated
synthetic set. Every random choice of epoch ``e`` (shuffling, crops, flips, cutout) comes from a generator
seeded with ``derive_seed(seed, "epoch", e)``, so a run is reproducible and a resumed run continues exactly
as an uninterrupted one would (bit for bit on CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from synthgap.config import TrainConfig
from synthgap.distributed import all_sum, barrier, current, is_main, sync_buffers, wrap
from synthgap.errors import UserError
from synthgap.metrics import evaluate
from synthgap.seeding import derive_seed, torch_generator
from synthgap.train.augment import augment
from synthgap.train.precision import autocast_for, channels_last_for
from synthgap.train.state import load_state, restore, save_state

Tensors = tuple[torch.Tensor, torch.Tensor]
TrainSet = Tensors | Callable[[int], Tensors]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one record per epoch
    final: dict = field(default_factory=dict)  # metrics of every eval set after the last epoch
    resumed_from: int = 0  # first epoch run in this process (0: fresh start)


def to_device_tensors(x: np.ndarray, y: np.ndarray, device: torch.device | str) -> Tensors:
    """uint8 NHWC numpy images and labels -> uint8 NCHW and int64 tensors on ``device``."""
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    return images, torch.from_numpy(y.astype(np.int64)).to(device)


def lr_factor(cfg: TrainConfig, epoch: int, progress: float) -> float:
    """Multiplier of the base lr at fractional epoch ``epoch + progress``."""
    t = epoch + progress
    warm = min(1.0, t / cfg.warmup_epochs) if cfg.warmup_epochs else 1.0
    if cfg.schedule == "multistep":
        return warm * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * t / cfg.epochs))
    return warm


def train_classifier(
    model: torch.nn.Module,
    train_set: TrainSet,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device | str,
    evals: dict[str, Tensors] | None = None,
    state_path: Path | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    eval_every_epoch: bool = True,
    desc: str = "train",
) -> TrainResult:
    device = torch.device(device)
    evals = evals or {}
    model.to(device)
    channels_last = channels_last_for(device, cfg.precision)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dist = current()  # under torchrun: each process trains on its slice of every global batch
    net = wrap(model, device)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
        **({"fused": True} if device.type == "cuda" else {"foreach": True}),
    )
    result = TrainResult()
    start_epoch = 0
    fingerprint = {"config": cfg.model_dump(mode="json"), "seed": seed}
    state = load_state(state_path, fingerprint, device)
    if state is not None:
        restore(state, model=model, optimizer=opt)
        result.history = list(state["history"])
        start_epoch = result.resumed_from = int(state["epoch"])
        tqdm.write(f"{desc}: resuming from {state_path} at epoch {start_epoch}")

    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, disable=None, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        x_train, y_train = train_set(epoch) if callable(train_set) else train_set
        x_train, y_train = x_train.to(device, non_blocking=True), y_train.to(device, non_blocking=True)
        n = len(y_train)
        gen = torch_generator(derive_seed(seed, "epoch", epoch), device)
        order = torch.randperm(n, device=device, generator=gen)
        steps = n // cfg.batch_size + (n % cfg.batch_size >= 2)  # a trailing batch of one breaks BatchNorm
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for step in range(steps):
            lr = cfg.lr * lr_factor(cfg, epoch, step / steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb = augment(x_train[idx], gen, cfg.crop_padding, cfg.flip, cfg.cutout)  # the whole global batch
            xb, yb = dist.shard(xb).float().div_(255.0), dist.shard(y_train[idx])
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, cfg.precision):
                logits = net(xb)
                loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)

        sync_buffers(model)  # BatchNorm statistics of rank 0, so every process evaluates the same model
        loss_sum, correct = all_sum(loss_sum), all_sum(correct)
        seen = int(all_sum(torch.tensor(seen, device=device)))
        record = {
            "epoch": epoch + 1,
            "lr": cfg.lr * lr_factor(cfg, epoch, 0.0),
            "train_loss": loss_sum.item() / max(seen, 1),
            "train_top1": 100.0 * correct.item() / max(seen, 1),
        }
        if not math.isfinite(record["train_loss"]):
            kept = f"; the last good state is kept in {state_path}" if state_path is not None and state_path.exists() else ""
            raise UserError(
                f"{desc}: training diverged (non-finite loss) in epoch {epoch + 1}{kept}",
                "lower the learning rate or set precision: fp32",
            )
        for name, (x_eval, y_eval) in evals.items() if eval_every_epoch else ():
            metrics = evaluate(model, x_eval, y_eval, batch_size=cfg.eval_batch_size, precision=cfg.precision)
            record.update({f"{name}_{k}": v for k, v in metrics.items() if k != "per_class"})
        record["seconds"] = time.perf_counter() - t0
        result.history.append(record)
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k in ("train_loss", "val_top1", "test_top1")})
        if on_epoch is not None:
            on_epoch(record)
        last = epoch + 1 == cfg.epochs
        if state_path is not None and cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0 and not last:
            save_state(state_path, fingerprint, epoch=epoch + 1, model=model, optimizer=opt, history=result.history)

    for name, (x_eval, y_eval) in evals.items():
        metrics = evaluate(model, x_eval, y_eval, batch_size=cfg.eval_batch_size, precision=cfg.precision)
        result.final.update({f"{name}_{k}": v for k, v in metrics.items()})
    if state_path is not None and is_main():
        state_path.unlink(missing_ok=True)
    barrier()  # everything rank 0 wrote exists before any process goes on
    return result


def state_file(root: Path, stage: str, params: dict) -> Path:
    """Where a stage keeps its resumable training state: under the repository root (outside DVC's outputs,
    which DVC deletes before it reruns a stage), one file per distinct set of params so parallel
    experiments never share one."""
    key = derive_seed(stage, sorted((k, str(v)) for k, v in params.items()))
    return root / ".synthgap" / "state" / f"{stage}-{key:016x}.pt"
