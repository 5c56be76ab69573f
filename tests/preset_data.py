"""Writers of small stand-ins for the real datasets, in each dataset's original on-disk format.

Each ``write_<name>(root, per_class, test_per_class)`` writes the files that ``synthgap.data.sources`` reads
for that dataset name into ``root`` (``data/raw/<name>`` of a workspace), with the official layout: CIFAR
python pickles (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``;
``cifar-100-python/train``, ``test``, ``meta``), Fashion-MNIST gzip idx files, CINIC-10 PNG folders
(``train/``, ``valid/``, ``test/`` x 10 class folders) and the DermaMNIST ``.npz`` (28 x 28 RGB with
``train/val/test_images`` and ``(N, 1)`` labels). Images are noise around a per-class colour, so a classifier
can learn something from a few of them.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CINIC10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_images(labels: np.ndarray, num_classes: int, size: int, channels: int, seed: int) -> np.ndarray:
    """uint8 (N, size, size, channels): a class-specific mean colour plus noise."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).integers(30, 226, size=(num_classes, channels))
    noise = rng.normal(0, 30, size=(len(labels), size, size, channels))
    return np.clip(means[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def balanced_labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    y = np.repeat(np.arange(num_classes), per_class)
    return y[np.random.default_rng(seed).permutation(len(y))].astype(np.int64)


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the official CIFAR files: bytes and str (numpy's dtype codes) as
    Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), so no ``_codecs.encode`` global (also used by tests/data/test_formats.py)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str2(self, obj: bytes | str) -> None:
        obj = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_str2


def dump_py2(obj: object, path: Path) -> None:
    """Pickle ``obj`` as the official CIFAR files are: Python 2 protocol 2 strings, numpy 1 module names."""
    with open(path, "wb") as fh:
        Py2Pickler(fh, protocol=2).dump(obj)
    path.write_bytes(path.read_bytes().replace(b"cnumpy._core.", b"cnumpy.core."))  # numpy 1, as in 2009


def pickle_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: bytes) -> None:
    """A CIFAR python batch: ``data`` (N, 3072) uint8 in CHW order, labels a list of ints (bytes keys)."""
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    dump_py2({b"batch_label": b"synthgap test", label_key: labels.tolist(), b"data": data}, path)


def write_cifar10(root: Path, per_class: int, test_per_class: int) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    y = balanced_labels(10, per_class, 0)
    x = class_images(y, 10, 32, 3, 0)
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5), start=1):
        pickle_batch(folder / f"data_batch_{i}", x[part], y[part], b"labels")
    yt = balanced_labels(10, test_per_class, 1)
    pickle_batch(folder / "test_batch", class_images(yt, 10, 32, 3, 1), yt, b"labels")
    dump_py2({b"label_names": [c.encode() for c in CINIC10_CLASSES], b"num_vis": 3072}, folder / "batches.meta")


def write_cifar100(root: Path, per_class: int, test_per_class: int) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", per_class, 0), ("test", test_per_class, 1)):
        y = balanced_labels(100, n, seed)
        x = class_images(y, 100, 32, 3, seed)
        data = np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))
        dump_py2({b"filenames": [b"x.png"] * len(y), b"fine_labels": y.tolist(),
                  b"coarse_labels": (y // 5).tolist(), b"data": data}, folder / name)
    dump_py2({b"fine_label_names": [f"class{c:03d}".encode() for c in range(100)],
              b"coarse_label_names": [f"super{c:02d}".encode() for c in range(20)]}, folder / "meta")


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format: magic 0 0 0x08 ndim, big-endian uint32 dimensions, uint8 data."""
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_fashion_mnist(root: Path, per_class: int, test_per_class: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", per_class, 0), ("t10k", test_per_class, 1)):
        y = balanced_labels(10, n, seed)
        x = class_images(y, 10, 28, 1, seed)[..., 0]
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y.astype(np.uint8))))


def write_cinic10(root: Path, per_class: int, test_per_class: int) -> None:
    """CINIC-10's layout: ``train/``, ``valid/``, ``test/``, one folder per class of 32x32 RGB PNGs (the
    official train and valid splits have equal size)."""
    for split, n, seed in (("train", max(per_class // 2, 1), 0), ("valid", max(per_class - per_class // 2, 1), 2),
                           ("test", test_per_class, 1)):
        y = balanced_labels(10, n, seed)
        x = class_images(y, 10, 32, 3, seed)
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / split / CINIC10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{split}-{i:05d}.png")


def write_medmnist(file: Path, num_classes: int, size: int, per_class: int, test_per_class: int) -> None:
    """A MedMNIST ``.npz``: size x size x 3 uint8 images and (N, 1) uint8 labels for train / val / test."""
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", max(per_class - per_class // 5, 1), 0), ("val", max(per_class // 5, 1), 2),
                           ("test", test_per_class, 1)):
        y = balanced_labels(num_classes, n, seed)
        arrays[f"{split}_images"] = class_images(y, num_classes, size, 3, seed)
        arrays[f"{split}_labels"] = y.astype(np.uint8)[:, None]
    np.savez_compressed(file, **arrays)


def write_dermamnist(root: Path, per_class: int, test_per_class: int) -> None:
    """MedMNIST's ``dermamnist.npz`` (28 px, 7 classes)."""
    write_medmnist(root / "dermamnist.npz", 7, 28, per_class, test_per_class)


def write_bloodmnist_64(root: Path, per_class: int, test_per_class: int) -> None:
    """MedMNIST+'s ``bloodmnist_64.npz`` (64 px, 8 classes): the Equivalence paper's BloodMNIST."""
    write_medmnist(root / "bloodmnist_64.npz", 8, 64, per_class, test_per_class)


WRITERS = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "fashion_mnist": write_fashion_mnist,
    "cinic10": write_cinic10,
    "dermamnist": write_dermamnist,
    "bloodmnist_64": write_bloodmnist_64,
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10, "cinic10": 10, "dermamnist": 7, "bloodmnist_64": 8}
