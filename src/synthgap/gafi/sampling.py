"""Class-balanced sampling from a class-conditional generator with per-image seeds.

The latent of image ``k`` of class ``c`` in stream ``key`` is ``stddev * normal_from(image_seeds(...))``:
the Expansion Trick is ``stddev > 1`` (the Truncation Trick would be ``< 1``). Images come back as uint8
(N, C, H, W), exactly as they would be stored on disk, so the classifier sees the same pixels either way.
"""

from __future__ import annotations

import torch

from synthgap.models.biggan import Generator
from synthgap.noise import image_seeds, normal_from
from synthgap.images import to_uint8


def balanced_counts(total: int, num_classes: int) -> torch.Tensor:
    """Images per class for a class-balanced set of ``total`` (the first ``total % C`` classes get one more)."""
    counts = torch.full((num_classes,), total // num_classes, dtype=torch.long)
    counts[: total % num_classes] += 1
    return counts


def split_quota(quota: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Split per-class quotas over ``parts`` generators: quota // K each, the remainder to the first ones."""
    base, rest = quota // parts, quota % parts
    return [base + (k < rest).long() for k in range(parts)]


@torch.no_grad()
def generate(
    generator: Generator,
    labels: torch.Tensor,
    seeds: torch.Tensor,
    stddev: float,
    batch_size: int = 1024,
) -> torch.Tensor:
    """uint8 images for ``labels`` with latents ``stddev * N(0, I)`` drawn from the per-image ``seeds``."""
    device = next(generator.parameters()).device
    out = []
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size].to(device)
        z = normal_from(seeds[start : start + batch_size].to(device), generator.spec.z_dim).mul_(stddev)
        out.append(to_uint8(generator(z, y)))
    if not out:
        spec = generator.spec
        return torch.zeros((0, spec.channels, spec.image_size, spec.image_size), dtype=torch.uint8, device=device)
    return torch.cat(out)


def candidate_seeds(base_seed: int, cls: int, start: int, count: int, *key: object) -> torch.Tensor:
    """Seeds of candidates ``start .. start+count-1`` of class ``cls`` in stream ``(base_seed, *key)``."""
    return image_seeds(base_seed, torch.arange(start, start + count), *key, "class", cls)


def save_synthetic(path, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...],
                   seeds: torch.Tensor | None = None, **extra) -> None:
    """Write a labelled synthetic set as ``.npz``: ``x_train`` (N, H, W, C) uint8 and ``y_train`` travel
    together (plus ``seeds``, ``class_names`` and any ``extra`` arrays), in the layout the ``npz`` dataset
    loader reads."""
    import numpy as np

    from synthgap.paths import atomic_save_npz

    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    arrays = {
        "x_train": images.permute(0, 2, 3, 1).cpu().numpy(),
        "y_train": labels.cpu().numpy().astype(np.int64),
        "class_names": np.asarray(classes),
    }
    if seeds is not None:
        arrays["seeds"] = seeds.cpu().numpy()
    atomic_save_npz(path, **arrays, **{k: np.asarray(v) for k, v in extra.items()})
