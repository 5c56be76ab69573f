"""Batch augmentation on the device that holds the batch: no per-sample PIL pipeline.

All operations act on raw uint8 pixels before normalisation, so "zero padding" means black pixels, as in
the GaFi paper (pad to 40x40, random 32x32 crop, random horizontal flip; optional cutout).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad (N,C,H,W) by ``padding`` and take one random HxW window per image."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N,1,H,1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N,1,1,W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square centred at a uniform pixel (clipped at the border), per image."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), device=x.device, generator=gen)
    cx = torch.randint(0, w, (n,), device=x.device, generator=gen)
    top, left = (cy - size // 2)[:, None], (cx - size // 2)[:, None]
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= top) & (ys < top + size)
    in_x = (xs >= left) & (xs < left + size)
    mask = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(mask[:, None], 0)


def augment(x: torch.Tensor, gen: torch.Generator, padding: int, flip: bool, cutout_size: int) -> torch.Tensor:
    x = random_crop(x, padding, gen)
    if flip:
        x = random_flip(x, gen)
    return cutout(x, cutout_size, gen)
