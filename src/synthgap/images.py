"""Pixel conventions: datasets and saved sets are uint8; generators work in [-1, 1]."""

from __future__ import annotations

import torch


def to_unit_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [-1, 1] (what the GAN and EDM models are trained on)."""
    return x_uint8.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Model output in [-1, 1] -> uint8 pixels, exactly as a PNG of the image would store them."""
    return images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
