"""Per-image Gaussian noise from a counter-based hash: reproducible per image, vectorised on any device.

Every synthetic image has its own integer seed; its latent is a pure function of that seed. A set of
images is therefore the same whatever the batch size, the device, the order of generation or the way the
work is split across processes, like EDM's per-image seeds, but without creating one random generator per
image. The hash is splitmix64 (Steele et al. 2014) evaluated in wrapping int64 arithmetic; two hashed words
give one pair of normals through Box-Muller in float64.
"""

from __future__ import annotations

import math

import torch

from synthgap.seeding import derive_seed


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MUL1
    x = (x ^ _shr(x, 27)) * _MUL2
    return x ^ _shr(x, 31)


def image_seeds(base_seed: int, indices: torch.Tensor, *key: object) -> torch.Tensor:
    """Seeds of images ``indices`` (int64 tensor) in the stream named by ``(base_seed, *key)``."""
    stream = _signed(derive_seed(base_seed, *key))
    return splitmix64(indices.to(torch.int64) * _GOLDEN + stream)


def uniform_from(seeds: torch.Tensor, count: int) -> torch.Tensor:
    """(N, count) float64 uniforms in (0, 1), a pure function of each row's seed."""
    counters = torch.arange(count, device=seeds.device, dtype=torch.int64)
    words = splitmix64(splitmix64(seeds[:, None]) + counters[None, :] * _GOLDEN)
    return (_shr(words, 11).to(torch.float64) + 0.5) * 2.0**-53


def normal_from(seeds: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, dim) float32 standard normals, a pure function of each row's seed."""
    pairs = (dim + 1) // 2
    u = uniform_from(seeds, 2 * pairs)
    radius = torch.sqrt(-2.0 * torch.log(u[:, :pairs]))
    angle = 2.0 * math.pi * u[:, pairs:]
    z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=2).flatten(1)
    return z[:, :dim].to(torch.float32)
