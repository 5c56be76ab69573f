"""Stratified train/validation splits and class-proportional base subsets.

Base subsets of one seed are drawn from one fixed per-class permutation (each takes its first k images per
class), so a larger subset contains a smaller one whenever the rounded class quotas grow with the size. Each class gets a share proportional to its frequency
(largest-remainder rounding, at least one image per class), so a grid over base sizes varies only the
amount of data, never the class mix.
"""

from __future__ import annotations

import numpy as np

from synthgap.errors import UserError


def stratified_split(labels: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with ``n_val`` validation images in class proportion (sorted)."""
    n = len(labels)
    if n_val == 0:
        return np.arange(n), np.arange(0)
    num_classes = len(np.unique(labels))
    if not num_classes <= n_val <= n - num_classes:
        raise UserError(
            f"prepare_data.val_size = {n_val} does not fit a training split of {n} images and {num_classes} classes",
            f"choose 0 or a value in {num_classes}..{n - num_classes}",
        )
    val = proportional_subset(labels, n_val, seed)
    train = np.setdiff1d(np.arange(n), val)
    return train, val


def class_quotas(labels: np.ndarray, size: int) -> np.ndarray:
    """Images per class for a class-proportional subset of ``size`` (largest remainder, >= 1 per class)."""
    counts = np.bincount(labels)
    present = counts > 0
    k = int(present.sum())
    if size < k:
        raise UserError(f"subset size {size} is smaller than the number of classes ({k})", f"use a size >= {k}")
    if size > len(labels):
        raise UserError(
            f"subset size {size} is larger than the training split ({len(labels)} images)",
            f"use a size <= {len(labels)}",
        )
    share = counts * size / len(labels)
    quota = np.floor(share).astype(np.int64)
    leftover = size - int(quota.sum())
    order = np.lexsort((np.arange(len(counts)), -(share - quota)))  # largest remainder, ties by class index
    quota[order[:leftover]] += 1
    for c in np.flatnonzero(present & (quota == 0)):  # every present class keeps at least one image
        quota[np.argmax(quota)] -= 1
        quota[c] = 1
    return quota


def per_class_permutation(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(int(labels.max()) + 1)]


def proportional_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-proportional subset (prefixes of one per-class permutation of ``seed``)."""
    quota = class_quotas(labels, size)
    order = per_class_permutation(labels, seed)
    return np.sort(np.concatenate([order[c][: quota[c]] for c in range(len(quota))]))
