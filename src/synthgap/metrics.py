"""Classifier evaluation: top-1, top-5 (when there are more than 10 classes) and accuracy per class."""

from __future__ import annotations

import torch

from synthgap.train.precision import autocast_for


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, precision: str = "auto", copies: int = 1
) -> torch.Tensor:
    """Logits (float32) for uint8 (N, C, H, W) images, in eval mode, batch by batch on the model's device.
    ``copies`` > 1: ``model`` is k stacked classifiers, each shown every image; logits are (N, k, classes)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True).float().div_(255.0)
        xb = xb.repeat(1, copies, 1, 1) if copies > 1 else xb
        with autocast_for(device, precision):
            out.append(model(xb).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def accuracy_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict:
    """Top-1 (and top-5 for more than 10 classes) in percent, plus a list of per-class top-1."""
    y = y.to(logits.device)
    num_classes = logits.shape[1]
    pred = logits.argmax(1)
    hit = (pred == y).float()
    metrics = {"top1": 100.0 * hit.mean().item()}
    if num_classes > 10:
        top5 = logits.topk(5, dim=1).indices.eq(y[:, None]).any(1).float()
        metrics["top5"] = 100.0 * top5.mean().item()
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1)
    per_class = torch.bincount(y, weights=hit, minlength=num_classes) / counts
    metrics["per_class"] = (100.0 * per_class).tolist()
    return metrics


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, precision: str = "auto") -> dict:
    return accuracy_metrics(predict_logits(model, x, batch_size, precision), y)
