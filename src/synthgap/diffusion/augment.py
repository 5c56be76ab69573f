"""EDM's non-leaking augmentation for diffusion training (Karras et al. 2022, appendix F.2; NVlabs/edm
``training/augment.py`` as ``train.py`` configures it for CIFAR-10).

Each image of a training batch is transformed with probability ``p`` per transform (x-flip: always eligible,
EDM's ``xflip=1e8``), and the network is told what was done: the 9 *augment labels* (x-flip, y-flip, log2
scale, rotation as cos - 1 and sin, anisotropy as w cos r and w sin r, translation x and y) condition it like
the noise level, so it learns the augmented distribution as a separate mode and samples the clean one with
all labels zero. Transforms, their distributions, the label layout and the mirrored borders are EDM's; the
geometric transforms are executed with one bilinear resampling (EDM resamples at twice the resolution between
sym6 wavelet filters, an anti-aliasing refinement left out here). Every draw comes from the training
step's generator, so a batch is augmented identically on resume and under data parallelism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

AUGMENT_DIM = 9  # the augment labels EDM's CIFAR-10 pipe produces (its networks' augment_dim)


def _affine(a, b, c, d, e, f) -> torch.Tensor:
    """Batch of 3x3 homogeneous matrices ``[[a, b, c], [d, e, f], [0, 0, 1]]`` (tensors or numbers, at least
    one a tensor of the batch)."""
    like = next(v for v in (a, b, c, d, e, f) if isinstance(v, torch.Tensor))
    zero, one = torch.zeros_like(like), torch.ones_like(like)
    rows = [v if isinstance(v, torch.Tensor) else zero + v for v in (a, b, c, d, e, f)]
    return torch.stack([*rows, zero, zero, one], dim=-1).view(-1, 3, 3)


def _rotation(theta: torch.Tensor) -> torch.Tensor:
    """Rotations by ``theta`` (radians)."""
    return _affine(theta.cos(), -theta.sin(), 0.0, theta.sin(), theta.cos(), 0.0)


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _affine(sx, 0.0, 0.0, 0.0, sy, 0.0)


def _translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _affine(1.0, 0.0, tx, 0.0, 1.0, ty)


@dataclass(frozen=True)
class AugmentPipe:
    """EDM's CIFAR-10 augmentation: ``p`` the probability of each transform (EDM: 0.12), ``xflip`` whether
    horizontal flips are among them (EDM: yes; off for digits, whose mirror images are not digits)."""

    p: float = 0.12
    xflip: bool = True
    scale_std: float = 0.2  # log2 standard deviation of isotropic scaling
    aniso_std: float = 0.2  # log2 standard deviation of anisotropic scaling
    aniso_rotate_prob: float = 0.5  # anisotropy along a rotated axis
    translate_std: float = 0.125  # standard deviation of translation, in image sizes

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented images, augment labels (N, 9)) for images (N, C, H, W) in [-1, 1]."""
        n, _, h, w = images.shape
        dev = images.device

        def chosen(prob: float, shape=(n,)) -> torch.Tensor:
            return torch.rand(shape, device=dev, generator=gen) < prob

        def coin() -> torch.Tensor:
            return torch.randint(2, (n,), device=dev, generator=gen)

        labels = []
        for enabled, dim, prob in ((self.xflip, 3, 1.0), (True, 2, self.p)):  # x-flip (EDM's multiplier 1e8: always eligible), y-flip
            flip = coin()
            flip = torch.where(chosen(prob), flip, torch.zeros_like(flip)) * int(enabled)
            images = torch.where(flip.view(-1, 1, 1, 1) == 1, images.flip(dim), images)
            labels.append(flip.float())

        g_inv = torch.eye(3, device=dev).expand(n, 3, 3)  # output pixel -> source pixel, centred coordinates
        scale = torch.randn(n, device=dev, generator=gen)
        scale = torch.where(chosen(self.p), scale, torch.zeros_like(scale))
        s = torch.exp2(scale * self.scale_std)
        g_inv = g_inv @ _scaling(1 / s, 1 / s)
        labels.append(scale)

        angle = (torch.rand(n, device=dev, generator=gen) * 2 - 1) * math.pi
        angle = torch.where(chosen(self.p), angle, torch.zeros_like(angle))
        g_inv = g_inv @ _rotation(angle)
        labels += [angle.cos() - 1, angle.sin()]

        aniso = torch.randn(n, device=dev, generator=gen)
        axis = (torch.rand(n, device=dev, generator=gen) * 2 - 1) * math.pi
        aniso = torch.where(chosen(self.p), aniso, torch.zeros_like(aniso))
        axis = torch.where(chosen(self.aniso_rotate_prob), axis, torch.zeros_like(axis))
        s = torch.exp2(aniso * self.aniso_std)
        g_inv = g_inv @ _rotation(-axis) @ _scaling(1 / s, s) @ _rotation(axis)
        labels += [aniso * axis.cos(), aniso * axis.sin()]

        shift = torch.randn(2, n, device=dev, generator=gen)
        shift = torch.where(chosen(self.p, (1, n)), shift, torch.zeros_like(shift))
        g_inv = g_inv @ _translation(-shift[0] * w * self.translate_std, -shift[1] * h * self.translate_std)
        labels += [shift[0], shift[1]]

        return warp(images, g_inv), torch.stack(labels, dim=1)


def warp(images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """Resample images (N, C, H, W) so that output pixel ``q`` shows the input at ``g_inv[n] @ q`` (3x3
    homogeneous, pixel units, origin at the image centre, x right, y down); bilinear. Borders as EDM's: the
    image mirrored without repeating its edge pixel, up to one image size on each side, zeros beyond."""
    n, c, h, w = images.shape
    padded = F.pad(images, [w - 1, w - 1, h - 1, h - 1], mode="reflect")
    pw, ph = padded.shape[3], padded.shape[2]

    def to_unit(width: int, height: int) -> torch.Tensor:  # centred pixels -> grid_sample's [-1, 1]
        return torch.diag(torch.tensor([2 / width, 2 / height, 1.0], device=images.device, dtype=g_inv.dtype))

    theta = (to_unit(pw, ph) @ g_inv @ torch.linalg.inv(to_unit(w, h)))[:, :2, :]
    grid = F.affine_grid(theta.to(images.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
