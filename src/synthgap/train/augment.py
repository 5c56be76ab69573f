"""Batch augmentation on the device that holds the batch: no per-sample PIL pipeline.

All operations act on raw uint8 pixels before normalisation. The GaFi pipeline: pad to 40x40 (black in the
paper; the GaFi code pads 0 on images scaled to [-1, 1], mid-grey: ``crop_fill`` 128), random 32x32 crop,
random horizontal flip; optional cutout and, last, the GaFi code's random erasing with Gaussian noise.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator, fill: int = 0) -> torch.Tensor:
    """Pad (N,C,H,W) by ``padding`` pixels of value ``fill`` and take one random HxW window per image."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), value=fill)
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


def _boxes(cy: torch.Tensor, cx: torch.Tensor, sh: torch.Tensor, sw: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H, W) mask of the sh x sw rectangles centred at (cy, cx) (rows cy - sh//2 .. cy - sh//2 + sh - 1),
    clipped at the border."""
    top, left = (cy - sh // 2)[:, None], (cx - sw // 2)[:, None]
    ys = torch.arange(h, device=cy.device)[None, :]
    xs = torch.arange(w, device=cy.device)[None, :]
    in_y = (ys >= top) & (ys < top + sh[:, None])
    in_x = (xs >= left) & (xs < left + sw[:, None])
    return in_y[:, :, None] & in_x[:, None, :]


def cutout(x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a size x size square centred at a uniform pixel (clipped at the border), per image."""
    if size == 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), device=x.device, generator=gen)
    cx = torch.randint(0, w, (n,), device=x.device, generator=gen)
    side = torch.full((n,), size, device=x.device)
    return x.masked_fill(_boxes(cy, cx, side, side, h, w)[:, None], 0)


def erasing_mask(n: int, h: int, w: int, gen: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """(N, H, W) rectangles of :func:`random_erasing`: each side ceil(u * image side), u ~ U(0.2, 0.5), centred at a
    uniform pixel and clipped at the border (keras_cv RandomCutout with factors (0.2, 0.5))."""
    u = torch.rand(2, n, device=device, generator=gen) * 0.3 + 0.2
    sh, sw = torch.ceil(u[0] * h).long().clamp(max=h), torch.ceil(u[1] * w).long().clamp(max=w)
    cy = torch.randint(0, h, (n,), device=device, generator=gen)
    cx = torch.randint(0, w, (n,), device=device, generator=gen)
    return _boxes(cy, cx, sh, sw, h, w)


def random_erasing(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The GaFi code's random erasing, on every image: the :func:`erasing_mask` rectangle is filled with standard
    normal noise drawn for the whole image and min-max scaled onto the image's own [min, max] pixel range
    (so its mean is near mid-range and its std near range / 7 on 32x32x3 images)."""
    n, _, h, w = x.shape
    mask = erasing_mask(n, h, w, gen, x.device)
    noise = torch.randn(x.shape, device=x.device, generator=gen)
    lo, hi = x.flatten(1).amin(1).float(), x.flatten(1).amax(1).float()
    z_lo, z_hi = noise.flatten(1).amin(1), noise.flatten(1).amax(1)
    scale = ((hi - lo) / (z_hi - z_lo))[:, None, None, None]
    fill = ((noise - z_lo[:, None, None, None]) * scale + lo[:, None, None, None]).round().to(x.dtype)
    return torch.where(mask[:, None], fill, x)


def augment(x: torch.Tensor, gen: torch.Generator, padding: int, flip: bool, cutout_size: int,
            erasing: bool = False, crop_fill: int = 0) -> torch.Tensor:
    x = random_crop(x, padding, gen, crop_fill)
    if flip:
        x = random_flip(x, gen)
    x = cutout(x, cutout_size, gen)
    return random_erasing(x, gen) if erasing else x
