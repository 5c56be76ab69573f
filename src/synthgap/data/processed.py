"""The processed dataset written by the ``prepare_data`` stage and read by every later stage.

``data/processed/`` holds:

- ``dataset.npz``: ``x_train, y_train, x_val, y_val, x_test, y_test`` (uint8 NHWC images, int64 labels),
- ``info.json``: dataset name, class names, image shape, per-class counts of every split and the split seed.

Base subsets (Equivalence) are not stored: ``ProcessedData.base_subset(n)`` draws them from the train split
(or train + validation, ``ProcessedData.with_val_in_train``) with the split seed, so adding a base size never
changes this folder (and never reruns its dependants).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from synthgap.data.formats import read_npz
from synthgap.data.sources import ImageDataset, quoted
from synthgap.errors import UserError
from synthgap.paths import atomic_save_npz, atomic_write_json

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ProcessedData:
    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    split_seed: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def with_val_in_train(self) -> ProcessedData:
        """The train split followed by the validation split as one train split, validation left empty: for
        training on both (``gafi.gan.merge_train_val``, ``equivalence.merge_train_val``)."""
        return replace(self, x_train=np.concatenate([self.x_train, self.x_val]),
                       y_train=np.concatenate([self.y_train, self.y_val]),
                       x_val=self.x_val[:0], y_val=self.y_val[:0])

    def base_subset(self, size: int) -> np.ndarray:
        """Sorted train-split indices of the class-proportional base subset of ``size`` images."""
        from synthgap.data.splits import proportional_subset

        return proportional_subset(self.y_train, size, self.split_seed)

    def info(self) -> dict:
        counts = {
            s: np.bincount(self.split(s)[1], minlength=self.num_classes).tolist() for s in SPLITS
        }
        return {
            "name": self.name,
            "classes": list(self.classes),
            "image_shape": list(self.image_shape),
            "sizes": {s: int(len(self.split(s)[1])) for s in SPLITS},
            "class_counts": counts,
            "split_seed": self.split_seed,
        }


def save_processed(data: ProcessedData, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {f"{p}_{s}": data.split(s)[i] for s in SPLITS for i, p in enumerate("xy")}
    atomic_save_npz(folder / "dataset.npz", **arrays)
    atomic_write_json(folder / "info.json", data.info())


def load_info(folder: Path) -> dict:
    """The ``info.json`` of the processed dataset in ``folder`` (name, classes, shape, sizes), without its images."""
    folder = Path(folder)
    if not (folder / "info.json").is_file() or not (folder / "dataset.npz").is_file():
        raise UserError(f"no processed dataset in {folder}", "run `dvc repro prepare_data` first")
    return json.loads((folder / "info.json").read_text())


def load_processed(folder: Path) -> ProcessedData:
    folder = Path(folder)
    info = load_info(folder)
    arrays = read_npz(folder / "dataset.npz", tuple(f"{p}_{s}" for s in SPLITS for p in "xy"))
    return ProcessedData(info["name"], tuple(info["classes"]), split_seed=int(info.get("split_seed", 0)), **arrays)


def build_processed(dataset: ImageDataset, val_size: int | None, split_seed: int) -> ProcessedData:
    """Hold out a stratified validation split (default: as many images as the test set, as in the GaFi
    code). The dataset was validated when built; a hold-out that takes the last training image of a class
    is refused."""
    from synthgap.data.splits import stratified_split

    n_val = len(dataset.y_test) if val_size is None else val_size
    train_idx, val_idx = stratified_split(dataset.y_train, n_val, split_seed)
    y_train = dataset.y_train[train_idx]
    emptied = np.flatnonzero(np.bincount(y_train, minlength=len(dataset.classes)) == 0)
    if len(emptied):
        raise UserError(
            f"the validation split of {n_val} images (prepare_data.val_size) takes every training image of the "
            f"{dataset.name} classes {quoted(dataset.classes[c] for c in emptied)}",
            "give those classes at least 2 training images, or set prepare_data.val_size to 0",
        )
    return ProcessedData(
        dataset.name,
        dataset.classes,
        dataset.x_train[train_idx],
        y_train,
        dataset.x_train[val_idx],
        dataset.y_train[val_idx],
        dataset.x_test,
        dataset.y_test,
        split_seed,
    )
