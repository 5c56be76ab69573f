"""The augmentation grid: which cells to train, and the training set of each cell.

A cell is (setting, n_base, n_real_added, n_syn_added), trained once per trial. ``real`` cells add real
training images outside the base subset in class proportion; ``closed`` and ``open`` cells add class-balanced
synthetic images from the pool; both are redrawn per trial (seeded by the trial seed, the setting and n_base)
and nested across ratios within a trial. Mixing is plain concatenation with a uniform shuffle (done by the
training loop). Ratios are set per setting and may differ per base size (``equivalence.ratios_by_base``).
Cells the grid cannot hold (real ratios needing more images than the training split has,
ratios rounding to 0 or to another ratio's cell) are dropped with one warning line each before any training;
a base size left without real cells is left out of the equivalence fit (warned), and a grid where every base
size is is a UserError. A synthetic pool smaller than a cell needs is a UserError, also before training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from synthgap.data.splits import proportional_subset
from synthgap.errors import UserError
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


def grid_cells(n_base: int, n_train: int, ratios: dict[str, tuple[float, ...]], settings: tuple[str, ...]) -> tuple[list[Cell], list[dict]]:
    """All cells of one base size (each trained ``trials`` times), and the cells dropped, each as a dict with
    ``n_base, setting, ratio, added, reason``. ``ratios`` maps ``real`` and each of ``settings`` (closed, open)
    to its addition ratios at this base size (``EquivalenceConfig.ratios``). Dropped: real ratios that need
    more images than the training split has (``n_base + added > n_train``), and ratios whose rounded count is 0
    or repeats another ratio's cell."""
    cells, dropped = [Cell("real", n_base, 0, 0)], []

    def add(cell: Cell, ratio: float, added: int) -> None:
        reason = None
        if added == 0:
            reason = f"round({ratio} x {n_base}) = 0 images"
        elif cell in cells:
            reason = f"{added} images, the same cell as another ratio"
        elif cell.setting == "real" and n_base + added > n_train:
            reason = f"n_base + {added} = {n_base + added} exceeds the {n_train:,} training images"
        if reason is None:
            cells.append(cell)
        else:
            dropped.append({"n_base": n_base, "setting": cell.setting, "ratio": ratio, "added": added, "reason": reason})

    for ratio in ratios["real"]:
        added = round(ratio * n_base)
        add(Cell("real", n_base, added, 0), ratio, added)
    for setting in settings:
        for ratio in ratios[setting]:
            added = round(ratio * n_base)
            add(Cell(setting, n_base, 0, added), ratio, added)
    return cells, dropped


def dropped_line(stage: str, drop: dict) -> str:
    """The one warning line of a dropped cell."""
    return (f"{stage}: warning: n_base {drop['n_base']:,}, setting {drop['setting']}, ratio {drop['ratio']}: "
            f"cell dropped ({drop['reason']})")


def check_real_cells(grids: dict[int, list[Cell]], n_train: int) -> list[int]:
    """Base sizes whose cells (``grids``: every base size's cells from :func:`grid_cells`) hold no real
    addition, which the equivalence fit leaves out; a UserError when that is every base size, since
    fit_equivalence then has nothing to fit (raised before any training)."""
    empty = [b for b, cells in grids.items() if not any(c.n_real_added for c in cells)]
    if empty and len(empty) == len(grids):
        raise UserError(
            f"no base size in equivalence.base_sizes {list(grids)} gets a real-addition cell: every n_base + "
            f"round(ratio x n_base) for its real ratios exceeds the {n_train:,} training images (or rounds to 0, or "
            "the base has no real ratios), so fit_equivalence would have no real axis",
            "lower equivalence.base_sizes or equivalence.real_ratios (or ratios_by_base) so that n_base x (1 + ratio) "
            "fits the train split")
    return empty


def check_pool_sizes(cells: list[Cell], pools: dict) -> None:
    """A UserError, before any training, when a synthetic pool holds fewer images than a cell adds."""
    for setting, (_, pool_y) in pools.items():
        need = max((c.n_syn_added for c in cells if c.setting == setting), default=0)
        if need > len(pool_y):
            n_base = cells[0].n_base
            key = ("equivalence.open_set (a bigger pool) or equivalence.syn_ratios" if setting == "open" else
                   "equivalence.syn_ratios or ratios_by_base (the sample_diffusion pool holds the largest closed ratio x "
                   "n_base images; rerun it)")
            raise UserError(
                f"the {setting} synthetic pool holds {len(pool_y):,} images but n_base {n_base:,} at ratio "
                f"{need / n_base:g} needs {need:,}", f"change {key}")


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


def open_pool_source(open_set, stand_in_set: Path, root: Path) -> tuple[Path, str] | None:
    """Where the open-set pool is read from (path, format): ``None`` with ``source: none``; with ``stand_in``
    the Real-Fake base model's text-to-image set ``stand_in_set`` (synthesize_realfake writes it when ``base``
    is among ``realfake.ablation``); with ``path`` the user's pool, relative to ``root``."""
    if open_set.source == "none":
        return None
    if open_set.source == "path":
        return root / open_set.path, open_set.format
    if not stand_in_set.is_file():
        raise UserError(f"the stand-in's text-to-image set {stand_in_set} (the open-set pool) is missing",
                        "keep base in realfake.ablation and run synthesize_realfake, or set equivalence.open_set.source: none")
    return stand_in_set, "npz"


def synthetic_pools(cfg, pool: Path, sets: Path, data, root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pools augment and measure_synthetic draw from, as ``{setting: (x, y)}``: ``closed``, the .npz
    sample_diffusion wrote (``pool``), and, unless ``cfg.open_set.source`` is none, ``open``
    (:func:`open_pool_source`; ``sets`` is synthesize_realfake's folder). Both must carry ``data``'s classes."""
    from synthgap.realfake.pipeline import set_path

    pools = {"closed": load_pool(pool, "npz", data.num_classes, data.classes)}
    source = open_pool_source(cfg.open_set, set_path(sets, "base", "txt2img"), root)
    if source is not None:
        pools["open"] = load_pool(*source, data.num_classes, data.classes)
    return pools


def load_pool(path, fmt: str, num_classes: int, classes: tuple[str, ...] | None = None):
    """A labelled synthetic pool: an .npz with x_train/y_train (as ``save_synthetic`` writes), or an image
    folder of ``<class>/*`` files. An image folder's sub-folders must be exactly the dataset's class names
    ``classes`` (each folder's label is its name's index there, not its sorted position), so that a folder
    layout that does not carry the dataset's labels (CIFAKE's ``train/{FAKE,REAL}``) cannot mislabel a pool."""
    from pathlib import Path

    from synthgap.data import formats

    path = Path(path)
    if fmt == "npz":
        if not path.is_file():
            raise UserError(f"synthetic pool {path} not found", "point equivalence.open_set.path at an .npz with x_train, y_train")
        arrays = formats.read_npz(path, ("x_train", "y_train"), optional=("class_names",))
        x, y = formats.as_nhwc(arrays["x_train"], path), arrays["y_train"].reshape(-1).astype(np.int64)
        names = tuple(str(c) for c in arrays.get("class_names", ()))
        if classes is not None and names and names != tuple(str(c) for c in classes):
            raise UserError(f"synthetic pool {path} names its classes {list(names)[:10]}, not the dataset's "
                            f"{list(classes)[:10]}", "write the pool's y_train with the dataset's class indices and names")
    else:
        if not path.is_dir():
            raise UserError(f"synthetic image folder {path} not found", "point equivalence.open_set.path at <class>/* images")
        folders, items = formats.list_image_folder(path)
        names = tuple(str(c) for c in classes) if classes is not None else tuple(str(c) for c in range(num_classes))
        check_pool_folders(path, folders, names)
        index = {name: i for i, name in enumerate(names)}
        files = [f for f, _ in items]
        x = formats.read_images(files, None, grayscale=formats.is_grayscale(files[0]))
        y = np.asarray([index[folders[label]] for _, label in items], dtype=np.int64)
    if y.max(initial=0) >= num_classes:
        raise UserError(f"synthetic pool {path} has labels up to {y.max()} but the dataset has {num_classes} classes",
                        "use the dataset's class indices")
    return x, y


def check_pool_folders(path, folders, classes: tuple[str, ...]) -> None:
    """A UserError unless the class folders of an open-set image folder are exactly the dataset's classes."""
    unexpected = sorted(set(folders) - set(classes))
    missing = [c for c in classes if c not in set(folders)]
    if not unexpected and not missing:
        return
    if {f.upper() for f in folders} <= {"FAKE", "REAL"}:
        raise UserError(
            f"open-set image folder {path} has the class folders {sorted(folders)}: CIFAKE's real-vs-fake layout, "
            f"which carries no labels of the dataset's classes ({len(classes)}: {', '.join(classes[:10])}"
            f"{', ...' if len(classes) > 10 else ''}), so it cannot be used as a labelled open-set pool as is",
            "sort the synthetic images into <class>/ folders named after the dataset's classes (or an .npz with "
            "x_train, y_train) and point equivalence.open_set.path there")
    raise UserError(
        f"open-set image folder {path}: class folders {unexpected or 'none'} are not dataset classes and "
        f"{missing or 'none'} are missing",
        f"name the sub-folders exactly after the dataset's classes ({', '.join(classes)}) or fix equivalence.open_set.path")
