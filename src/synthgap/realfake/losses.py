"""Finetuning losses: min-SNR-weighted noise regression plus a distribution-matching term.

With predicted noise ``e_hat`` and true noise ``e`` of a batch (B, ...), per-sample weights
``w = min(snr, gamma) / snr`` (min-SNR, gamma 5; epsilon prediction):

- diffusion loss      ``mean_b(w_b * mse(e_hat_b, e_b))``
- ``mean`` (released code, default weight 0.003): ``mse(sum_b w_b e_hat_b, sum_b w_b e_b)``, a linear-kernel
  mean match over the batch,
- ``kernel`` (paper Eq. 7/21, weight 0.05): the biased squared MMD between {e_hat_b} and {e_b} with a sum of
  Gaussian kernels at bandwidths ``median distance * {0.5, 1, 2}``,

Both distribution terms are 0 when the two batches are identical.
"""

from __future__ import annotations

import torch


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """``min(snr, gamma) / snr`` with ``snr = abar / (1 - abar)`` at each timestep (epsilon prediction)."""
    abar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = abar / (1.0 - abar)
    return torch.clamp(snr, max=gamma) / snr


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (weights * per_sample).mean()


def mean_match_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The released code's term: MSE between the weighted batch sums of predicted and true noise."""
    w = weights.view(-1, *([1] * (pred.dim() - 1)))
    return (w * pred.float()).sum(0).sub((w * target.float()).sum(0)).pow(2).mean()


def kernel_mmd_loss(pred: torch.Tensor, target: torch.Tensor, scales: tuple[float, ...] = (0.5, 1.0, 2.0)) -> torch.Tensor:
    """Biased MMD^2 with Gaussian kernels; bandwidth from the median pairwise distance of the pooled batch
    (detached), times each of ``scales``."""
    x, y = pred.float().flatten(1), target.float().flatten(1)
    pooled = torch.cat([x, y])
    d2 = (pooled[:, None] - pooled[None]).pow(2).sum(-1)
    n = len(x)
    median = d2.detach()[~torch.eye(2 * n, dtype=torch.bool, device=d2.device)].quantile(0.5).clamp_min(1e-8)
    kernel = sum(torch.exp(-d2 / (2.0 * s * s * median)) for s in scales)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()


def distribution_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    if kind == "mean":
        return mean_match_loss(pred, target, weights)
    if kind == "kernel":
        return kernel_mmd_loss(pred, target)
    raise ValueError(f"unknown distribution matching '{kind}' (mean, kernel)")
