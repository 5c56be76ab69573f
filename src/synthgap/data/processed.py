"""The processed dataset written by the ``prepare_data`` stage and read by every later stage.

``data/processed/`` holds:

- ``dataset.npz``: ``x_train, y_train, x_val, y_val, x_test, y_test`` (uint8 NHWC images, int64 labels),
- ``base_subsets.npz``: for each base size ``n``, the array ``n<n>`` of indices into the train split,
- ``info.json``: dataset name, class names, image shape and per-class counts of every split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgap.data.formats import read_npz
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
    base_subsets: dict[int, np.ndarray]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.x_train.shape[1:]
        return int(h), int(w), int(c)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

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
            "base_sizes": sorted(self.base_subsets),
        }


def save_processed(data: ProcessedData, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(folder / "dataset.npz", **{f"{p}_{s}": data.split(s)[i] for s in SPLITS for i, p in enumerate("xy")})
    atomic_save_npz(folder / "base_subsets.npz", **{f"n{size}": idx for size, idx in data.base_subsets.items()})
    atomic_write_json(folder / "info.json", data.info())


def load_processed(folder: Path) -> ProcessedData:
    folder = Path(folder)
    if not (folder / "info.json").is_file() or not (folder / "dataset.npz").is_file():
        raise UserError(f"no processed dataset in {folder}", "run `dvc repro prepare_data` first")
    info = json.loads((folder / "info.json").read_text())
    arrays = read_npz(folder / "dataset.npz", tuple(f"{p}_{s}" for s in SPLITS for p in "xy"))
    subsets: dict[int, np.ndarray] = {}
    if (folder / "base_subsets.npz").is_file():
        with np.load(folder / "base_subsets.npz", allow_pickle=False) as archive:
            subsets = {int(key[1:]): archive[key] for key in archive.files}
    return ProcessedData(info["name"], tuple(info["classes"]), base_subsets=subsets, **arrays)


def build_processed(dataset, val_size: int | None, base_sizes: tuple[int, ...], split_seed: int) -> ProcessedData:
    """Hold out a stratified validation split (default: as many images as the test set, as in the GaFi
    code) and draw class-proportional base subsets of the remaining train split."""
    from synthgap.data.splits import proportional_subset, stratified_split

    n_val = len(dataset.y_test) if val_size is None else val_size
    train_idx, val_idx = stratified_split(dataset.y_train, n_val, split_seed)
    y_train = dataset.y_train[train_idx]
    subsets = {}
    for size in sorted(set(base_sizes)):
        try:
            subsets[size] = proportional_subset(y_train, size, split_seed)
        except UserError as err:
            raise UserError(f"prepare_data.base_sizes: {err.what}", err.fix) from None
    return ProcessedData(
        dataset.name,
        dataset.classes,
        dataset.x_train[train_idx],
        y_train,
        dataset.x_train[val_idx],
        dataset.y_train[val_idx],
        dataset.x_test,
        dataset.y_test,
        subsets,
    )
