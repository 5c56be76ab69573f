"""The one classifier training loop used by every paper.

Images stay uint8 (N, C, H, W) tensors on the training device; each batch is indexed, augmented and
normalised there. The evaluation sets are scored after every epoch (``eval_every_epoch``, for learning curves and best-epoch
selection) or only after the last one. The training set may be a fixed pair of tensors or a function ``epoch -> (x, y)`` that is
called at the start of every epoch, which is how GaFi's Dynamic Dataset Recycle swaps in a regenerated
synthetic set. Every random choice of epoch ``e`` (shuffling, crops, flips, cutout) comes from a generator
seeded with ``derive_seed(seed, "epoch", e)``, so a run is reproducible and a resumed run continues exactly
as an uninterrupted one would (bit for bit on CPU). With ``restore_best`` the val set is scored after every epoch
and each model ends with the weights of its best val epoch, which its final metrics then describe.
The optimizer is SGD (L2 weight decay) or SGDW (decoupled weight decay, the GaFi code's).
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
from synthgap.metrics import accuracy_metrics, evaluate, predict_logits
from synthgap.models.stacked import StackedClassifier, can_stack, unstack
from synthgap.seeding import derive_seed, torch_generator
from synthgap.train.augment import augment
from synthgap.staging import remove_after_commit
from synthgap.train.optim import SGD, SGDW
from synthgap.train.precision import autocast_for, channels_last_for
from synthgap.train.state import load_state, restore, save_state

Tensors = tuple[torch.Tensor, torch.Tensor]
TrainSet = Tensors | Callable[[int], Tensors]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one record per epoch
    final: dict = field(default_factory=dict)  # metrics of every eval set after the last epoch
    resumed_from: int = 0  # first epoch run in this process (0: fresh start)
    best_epoch: int | None = None  # restore_best: the epoch (1-based) whose weights were kept


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


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> SGD:
    """The recipe's optimizer: SGD with L2 weight decay, or SGDW with decoupled decay (``cfg.optimizer``)."""
    kwargs = {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov and cfg.momentum > 0,
              **({"fused": True} if device.type == "cuda" else {"foreach": True})}
    if cfg.optimizer == "sgdw":
        return SGDW(params, cfg.weight_decay, **kwargs)
    return SGD(params, weight_decay=cfg.weight_decay, **kwargs)


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
    """Train one classifier (see :func:`train_classifiers`)."""
    callback = None if on_epoch is None else (lambda records: on_epoch(records[0]))
    return train_classifiers([model], [train_set], cfg, seeds=[seed], device=device, evals=evals, state_path=state_path,
                             on_epoch=callback, eval_every_epoch=eval_every_epoch, desc=desc)[0]


def train_classifiers(
    models: list[torch.nn.Module],
    train_sets: list[TrainSet],
    cfg: TrainConfig,
    *,
    seeds: list[int],
    device: torch.device | str,
    evals: dict[str, Tensors] | None = None,
    state_path: Path | None = None,
    on_epoch: Callable[[list[dict]], None] | None = None,
    eval_every_epoch: bool = True,
    desc: str = "train",
) -> list[TrainResult]:
    """Train k classifiers with one recipe, model j on ``train_sets[j]`` with the random streams of
    ``seeds[j]``; returns one :class:`TrainResult` per model.

    Models of one CIFAR-ResNet shape whose training sets have one size are trained as one stacked network
    (:mod:`synthgap.models.stacked`, at most ``cfg.stack`` at a time): each gets the same data order,
    augmentation and updates as alone, so its result equals a run of its own up to float rounding.
    """
    if not len(models) == len(train_sets) == len(seeds):
        raise ValueError("one training set and one seed per model")
    size = cfg.stack if can_stack(models) else 1
    results: list[TrainResult] = []
    for start in range(0, len(models), size):
        part = slice(start, start + size)
        path = state_path if state_path is None or len(models) <= size else state_path.with_name(f"{state_path.stem}-{start}.pt")
        results += _train_together(models[part], train_sets[part], cfg, seeds=seeds[part], device=torch.device(device),
                                   evals=evals or {}, state_path=path, on_epoch=on_epoch,
                                   eval_every_epoch=eval_every_epoch, desc=desc)
    return results


def _train_together(models, train_sets, cfg: TrainConfig, *, seeds, device, evals, state_path, on_epoch,
                    eval_every_epoch, desc) -> list[TrainResult]:
    k = len(models)
    for model in models:
        model.to(device)
    module = models[0] if k == 1 else StackedClassifier(models).to(device)
    channels_last = channels_last_for(device, cfg.precision, stacked=k > 1)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    dist = current()  # under torchrun: each process trains on its slice of every global batch
    net = wrap(module, device)
    opt = make_optimizer(module.parameters(), cfg, device)
    if cfg.restore_best and "val" not in evals:
        raise UserError(f"{desc}: restore_best needs a val split to pick the best epoch",
                        "give prepare_data.val_size a positive value, or set restore_best: false")
    per_epoch = evals if eval_every_epoch else {k: v for k, v in evals.items() if k == "val" and cfg.restore_best}
    best: list[dict | None] = [None] * k  # restore_best: {"epoch", "top1", "state"} of each model's best epoch
    results = [TrainResult() for _ in models]
    start_epoch = 0
    fingerprint = {"config": cfg.model_dump(mode="json"), "seed": seeds[0] if k == 1 else list(seeds)}
    state = load_state(state_path, fingerprint, device)
    if state is not None:
        restore(state, model=module, optimizer=opt)
        histories = state["history"] if k > 1 else [state["history"]]
        start_epoch = int(state["epoch"])
        best = list(state.get("best", best))
        for result, history in zip(results, histories):
            result.history, result.resumed_from = list(history), start_epoch
        tqdm.write(f"{desc}: resuming from {state_path} at epoch {start_epoch}")

    label = desc if k == 1 else f"{desc} ({k} models)"
    bar = tqdm(range(start_epoch, cfg.epochs), desc=label, disable=None, initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        sets = [s(epoch) if callable(s) else s for s in train_sets]
        sets = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in sets]
        n = len(sets[0][1])
        if any(len(y) != n for _, y in sets):
            raise ValueError("models trained together need training sets of one size")
        gens = [torch_generator(derive_seed(seed, "epoch", epoch), device) for seed in seeds]
        orders = [torch.randperm(n, device=device, generator=gen) for gen in gens]
        steps = n // cfg.batch_size + (n % cfg.batch_size >= 2)  # a trailing batch of one breaks BatchNorm
        module.train()
        loss_sum = torch.zeros(k, device=device)
        correct = torch.zeros(k, device=device, dtype=torch.long)
        seen = 0
        for step in range(steps):
            lr = cfg.lr * lr_factor(cfg, epoch, step / steps)
            for group in opt.param_groups:
                group["lr"] = lr
            xbs, ybs = [], []
            for (x_train, y_train), order, gen in zip(sets, orders, gens):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                # the whole global batch
                xbs.append(augment(x_train[idx], gen, cfg.crop_padding, cfg.flip, cfg.cutout, cfg.erasing, cfg.crop_fill))
                ybs.append(y_train[idx])
            xb = xbs[0] if k == 1 else torch.cat(xbs, dim=1)  # model j reads channel block j
            yb = torch.stack(ybs, dim=1)  # (B, k)
            xb, yb = dist.shard(xb).float().div_(255.0), dist.shard(yb)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, cfg.precision):
                logits = net(xb)
                logits = logits[:, None] if k == 1 else logits  # (B, k, classes)
                if k == 1:
                    loss = F.cross_entropy(logits[:, 0].float(), yb[:, 0], label_smoothing=cfg.label_smoothing)
                    losses = loss.detach()[None]
                else:  # the sum of the k models' mean losses: each model gets its own gradient
                    per_model = F.cross_entropy(logits.float().transpose(1, 2), yb, label_smoothing=cfg.label_smoothing,
                                                reduction="none").mean(0)
                    loss, losses = per_model.sum(), per_model.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += losses * len(yb)
            correct += (logits.detach().argmax(2) == yb).sum(0)
            seen += len(yb)

        sync_buffers(module)  # BatchNorm statistics of rank 0, so every process evaluates the same model
        loss_sum, correct = all_sum(loss_sum), all_sum(correct)
        seen = int(all_sum(torch.tensor(seen, device=device)))
        records = [{
            "epoch": epoch + 1,
            "lr": cfg.lr * lr_factor(cfg, epoch, 0.0),
            "train_loss": loss_sum[j].item() / max(seen, 1),
            "train_top1": 100.0 * correct[j].item() / max(seen, 1),
        } for j in range(k)]
        if not all(math.isfinite(r["train_loss"]) for r in records):
            kept = f"; the last good state is kept in {state_path}" if state_path is not None and state_path.exists() else ""
            raise UserError(
                f"{desc}: training diverged (non-finite loss) in epoch {epoch + 1}{kept}",
                "lower the learning rate or set precision: fp32",
            )
        for name, (x_eval, y_eval) in per_epoch.items():
            for record, metrics in zip(records, _evaluate_all(module, k, x_eval, y_eval, cfg)):
                record.update({f"{name}_{key}": v for key, v in metrics.items() if key != "per_class"})
        if cfg.restore_best:
            _keep_best(best, records, module, models)
        seconds = time.perf_counter() - t0
        for result, record in zip(results, records):
            record["seconds"] = seconds / k
            result.history.append(record)
        bar.set_postfix({key: round(v, 3) for key, v in records[0].items() if key in ("train_loss", "val_top1", "test_top1")})
        if on_epoch is not None:
            on_epoch(records)
        last = epoch + 1 == cfg.epochs
        if state_path is not None and cfg.checkpoint_every and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
            histories = results[0].history if k == 1 else [r.history for r in results]
            save_state(state_path, fingerprint, epoch=epoch + 1, model=module, optimizer=opt, history=histories,
                       **({"best": best} if cfg.restore_best else {}))

    if k > 1:
        unstack(module, models)
    for model, result, kept in zip(models, results, best):
        if kept is not None:  # restore_best
            model.load_state_dict(kept["state"])
            result.best_epoch = kept["epoch"]
    for model, result in zip(models, results):
        for name, (x_eval, y_eval) in evals.items():
            metrics = evaluate(model, x_eval, y_eval, batch_size=cfg.eval_batch_size, precision=cfg.precision)
            result.final.update({f"{name}_{key}": v for key, v in metrics.items()})
    if state_path is not None and is_main():  # kept until the stage's outputs are in place (a late failure resumes)
        remove_after_commit(state_path)
    barrier()  # everything rank 0 wrote exists before any process goes on
    return results


def _keep_best(best: list[dict | None], records: list[dict], module: torch.nn.Module, models: list) -> None:
    """Copy the weights of every model whose val top-1 beats its best so far (strictly: the first of ties)."""
    improved = [j for j, r in enumerate(records) if best[j] is None or r["val_top1"] > best[j]["top1"]]
    if improved and len(models) > 1:
        unstack(module, models)
    for j in improved:
        state = {key: v.detach().clone() for key, v in models[j].state_dict().items()}
        best[j] = {"epoch": records[j]["epoch"], "top1": records[j]["val_top1"], "state": state}


def _evaluate_all(module: torch.nn.Module, k: int, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> list[dict]:
    """Metrics of each of the k models in ``module`` (a classifier, or k stacked) on one eval set."""
    if k == 1:
        return [evaluate(module, x, y, batch_size=cfg.eval_batch_size, precision=cfg.precision)]
    logits = predict_logits(module, x, cfg.eval_batch_size, cfg.precision, copies=k)  # (N, k, classes)
    return [accuracy_metrics(logits[:, j], y) for j in range(k)]
