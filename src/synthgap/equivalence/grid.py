"""The augmentation grid: which cells to train, and the training set of each cell.

A cell is (setting, n_base, n_real_added, n_syn_added), trained once per trial. ``real`` cells add real
training images outside the base subset in class proportion; ``closed`` and ``open`` cells add class-balanced
synthetic images from the pool; both are redrawn per trial and nested across ratios within a trial. Mixing is plain concatenation with a
uniform shuffle (done by the training loop). Real ratios that need more images than the training split has
are skipped and reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from synthgap.data.splits import proportional_subset
from synthgap.seeding import derive_seed


@dataclass(frozen=True)
class Cell:
    setting: str  # real | closed | open
    n_base: int
    n_real_added: int
    n_syn_added: int

    @property
    def name(self) -> str:
        added = self.n_real_added if self.setting == "real" else self.n_syn_added
        return f"{self.setting}+{added}"

    def params(self) -> dict:
        return asdict(self)


def grid_cells(n_base: int, n_train: int, real_ratios, syn_ratios, settings: tuple[str, ...]) -> tuple[list[Cell], list[float]]:
    """All cells of one base size (each trained ``trials`` times), and the real ratios skipped because the
    training split is too small."""
    cells, skipped = [Cell("real", n_base, 0, 0)], []
    for ratio in real_ratios:
        added = round(ratio * n_base)
        if n_base + added > n_train:
            skipped.append(ratio)
            continue
        cells.append(Cell("real", n_base, added, 0))
    for setting in settings:
        cells += [Cell(setting, n_base, 0, round(ratio * n_base)) for ratio in syn_ratios]
    return cells, skipped


def epochs_for(n_base: int, schedule: tuple[tuple[int, int], ...]) -> int:
    """Epochs of the first (largest n_base, epochs) pair that covers ``n_base`` (appendix B)."""
    for bound, epochs in sorted(schedule):
        if n_base <= bound:
            return epochs
    return sorted(schedule)[-1][1]


def balanced_prefix(labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
    """Indices of ``count`` items taking classes in turn (class-balanced up to one image)."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    order = np.lexsort((labels, rank))
    if count > len(order):
        raise ValueError(f"pool of {len(order)} images cannot supply {count}")
    return order[:count]


def cell_training_set(cell: Cell, x_train, y_train, base_idx, pools: dict, num_classes: int, seed: int):
    """uint8 NHWC images and labels of one cell in the trial with seed ``seed``: base + real or synthetic
    additions. Both kinds of additions are redrawn per trial and nested across ratios within a trial (the
    real ones class-proportional from outside the base, the synthetic ones class-balanced from the pool)."""
    xs, ys = [x_train[base_idx]], [y_train[base_idx]]
    if cell.n_real_added:
        rest = np.setdiff1d(np.arange(len(y_train)), base_idx)
        pick = rest[proportional_subset(y_train[rest], cell.n_real_added, derive_seed(seed, "real", cell.n_base))]
        xs.append(x_train[pick])
        ys.append(y_train[pick])
    if cell.n_syn_added:
        pool_x, pool_y = pools[cell.setting]
        order = np.random.default_rng(derive_seed(seed, "synthetic", cell.setting, cell.n_base)).permutation(len(pool_y))
        pick = order[balanced_prefix(pool_y[order], cell.n_syn_added, num_classes)]
        xs.append(pool_x[pick])
        ys.append(pool_y[pick])
    return np.concatenate(xs), np.concatenate(ys)


def load_pool(path, fmt: str, num_classes: int):
    """A labelled synthetic pool: an .npz with x_train/y_train (as ``save_synthetic`` writes), or an image
    folder of ``<class>/*`` files whose sorted class names index the labels."""
    from pathlib import Path

    from synthgap.data import formats
    from synthgap.errors import UserError

    path = Path(path)
    if fmt == "npz":
        if not path.is_file():
            raise UserError(f"synthetic pool {path} not found", "point equivalence.open_set.path at an .npz with x_train, y_train")
        arrays = formats.read_npz(path, ("x_train", "y_train"))
        x, y = formats.as_nhwc(arrays["x_train"], path), arrays["y_train"].reshape(-1).astype(np.int64)
    else:
        if not path.is_dir():
            raise UserError(f"synthetic image folder {path} not found", "point equivalence.open_set.path at <class>/* images")
        _, items = formats.list_image_folder(path)
        files = [f for f, _ in items]
        x = formats.read_images(files, None, grayscale=formats.is_grayscale(files[0]))
        y = np.asarray([label for _, label in items], dtype=np.int64)
    if y.max(initial=0) >= num_classes:
        raise UserError(f"synthetic pool {path} has labels up to {y.max()} but the dataset has {num_classes} classes",
                        "use the dataset's class indices")
    return x, y
