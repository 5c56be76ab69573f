"""Out-of-distribution test sets (Real-Fake, section 4.4): the same classes in another distribution.

The paper tests its ImageNette classifiers on ImageNet-V2, ImageNet-Sketch, ImageNet-R and ImageNet-A restricted
to ImageNette's ten classes. Their layouts, as their releases unpack:

- ImageNet-V2 (``imagenetv2-matched-frequency-format-val/``): ``<ImageNet class index>/*.jpeg``, index 0-999 in
  the sorted order of ImageNet-1k's WordNet ids (ImageNette's ten are :data:`IMAGENET_INDEX`);
- ImageNet-Sketch (``sketch/``), ImageNet-R (``imagenet-r/``), ImageNet-A (``imagenet-a/``): ``<wnid>/*``; R and A
  hold 200 of the 1,000 classes, so some of the training classes may be absent: they are left out, and
  the loaded :class:`OodSet` names the classes it covers.

``imagefolder`` reads any ``<class>/*`` folder named like the dataset's classes. For the embedded digits there is
no second digits distribution on disk, so ``digits_shifted`` is the test split under a fixed, seeded shift
(rotated by 15-30 degrees either way, shrunk to 75-95 %, Gaussian pixel noise): a corruption-style shift in the
manner of ImageNet-C, not a new source of digits. ``digits_fonts`` is one: as many digits as the test split,
rendered from the fonts the Real-Fake stand-in's corpus leaves out (:mod:`synthgap.data.fonts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from synthgap.data import formats
from synthgap.errors import UserError

if TYPE_CHECKING:
    from synthgap.config import OodSetConfig

# ImageNette's WordNet ids -> their ImageNet-1k class indices (ImageNet-V2's folder names)
IMAGENET_INDEX = {"n01440764": 0, "n02102040": 217, "n02979186": 482, "n03000684": 491, "n03028079": 497,
                  "n03394916": 566, "n03417042": 569, "n03425413": 571, "n03445777": 574, "n03888605": 701}


@dataclass(frozen=True)
class OodSet:
    name: str
    x: np.ndarray             # uint8 (N, H, W, C), the dataset's image shape
    y: np.ndarray             # int64, the dataset's class indices
    covered: tuple[str, ...]  # the dataset's classes the set holds images of


def load_ood(spec: OodSetConfig, classes: tuple[str, ...], x_test: np.ndarray, y_test: np.ndarray, root: Path, seed: int) -> OodSet:
    """The test set ``spec`` (a ``realfake.ood`` entry) at the shape of ``x_test`` (the dataset's test split,
    which ``digits_shifted`` shifts), labelled with indices into ``classes``; folders relative to ``root``."""
    if spec.format == "digits_shifted":
        return OodSet(spec.name, shifted(x_test, seed), y_test.astype(np.int64), tuple(classes))
    if spec.format == "digits_fonts":
        from synthgap.data.fonts import DIGITS, held_out_digits, require_digits

        require_digits(classes, f"out-of-distribution set {spec.name}: digits_fonts", "remove it from realfake.ood")
        _, h, _, c = x_test.shape
        x, y = held_out_digits(len(x_test), h, c, seed)
        return OodSet(spec.name, x, y, tuple(DIGITS))
    folder = root / spec.path
    if not folder.is_dir():
        raise UserError(f"out-of-distribution set {spec.name}: folder {folder} not found",
                        f"unpack {spec.format} there or remove it from realfake.ood")
    if spec.format == "imagenet_v2":
        unknown = [c for c in classes if c not in IMAGENET_INDEX]
        if unknown:
            raise UserError(f"out-of-distribution set {spec.name}: no ImageNet class index is known here for "
                            f"{unknown[:3]}", "imagenet_v2 maps ImageNette's WordNet ids; use format imagefolder "
                            "with <wnid>/* folders for other classes")
        subfolders = {c: folder / str(IMAGENET_INDEX[c]) for c in classes}
    else:
        subfolders = {c: folder / c for c in classes}
    items = [(f, label) for label, c in enumerate(classes) if subfolders[c].is_dir()
             for f in sorted(subfolders[c].iterdir()) if f.suffix.lower() in formats.IMAGE_SUFFIXES]
    labels = {label for _, label in items}
    covered = tuple(c for i, c in enumerate(classes) if i in labels)
    if not items:
        raise UserError(f"out-of-distribution set {spec.name}: {folder} holds no images of the dataset's classes "
                        f"({', '.join(classes[:3])}, ...)", f"check that it is {spec.format} and unpacked whole")
    _, h, _, c = x_test.shape
    x = formats.read_images([f for f, _ in items], h, grayscale=c == 1)
    return OodSet(spec.name, x, np.array([label for _, label in items], dtype=np.int64), covered)


def shifted(x: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (N, H, W, C) images rotated by +-(15-30) degrees, scaled by 0.75-0.95 about their centre (black
    outside) and given Gaussian noise of sd 0.06 (of the pixel range); the same output for the same seed."""
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    angle = torch.empty(n).uniform_(15.0, 30.0, generator=gen) * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1)
    scale = torch.empty(n).uniform_(0.75, 0.95, generator=gen)
    theta = angle * math.pi / 180
    # affine_grid maps output to input coordinates: the inverse of "rotate by theta, scale by s"
    cos, sin = theta.cos() / scale, theta.sin() / scale
    zero = torch.zeros(n)
    matrix = torch.stack([torch.stack([cos, sin, zero], 1), torch.stack([-sin, cos, zero], 1)], 1)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(255.0)
    grid = torch.nn.functional.affine_grid(matrix, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out + 0.06 * torch.randn(out.shape, generator=gen)
    return out.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
