"""The supported datasets: where their files live, how to download them, and how to load them.

``load_dataset(name, root, download, image_size)`` returns an :class:`ImageDataset` of uint8 NHWC arrays
with the official train/test split. Per-dataset rules follow the papers:

- ``digits``: scikit-learn's bundled 8x8 digits (the embedded default, no download); 0..16 is scaled to
  0..255 and a fixed stratified quarter is the test set.
- ``fashion_mnist``: zero-padded 28 -> 32 (GaFi).
- ``dermamnist``, ``bloodmnist``: MedMNIST 28 px, Lanczos-resized to 32 (GaFi for DermaMNIST; the
  Equivalence paper's 32x32 EDM for BloodMNIST); the official train and validation splits are merged into
  the training set (GaFi's 8,010 DermaMNIST training images are 7,007 + 1,003).
- ``cinic10``: train and valid merged (GaFi's 180,000 training images).

A dataset that is missing, with the download off or impossible (no network), ends with one line that says
which files to put where.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthgap.data import formats
from synthgap.errors import UserError


@dataclass(frozen=True)
class ImageDataset:
    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
                raise UserError(f"{self.name}: bad {split} split {x.shape}/{y.shape}", "check the data files")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise UserError(
                    f"{self.name}: {split} labels outside 0..{len(self.classes) - 1}",
                    "labels must be integers 0..num_classes-1",
                )


Loader = Callable[[Path, bool, "int | None"], ImageDataset]
LOADERS: dict[str, Loader] = {}


def loader(name: str) -> Callable[[Loader], Loader]:
    def register(fn: Loader) -> Loader:
        LOADERS[name] = fn
        return fn

    return register


def load_dataset(name: str, root: Path, download: bool = True, image_size: int | None = None) -> ImageDataset:
    if name not in LOADERS:
        raise UserError(f"unknown dataset '{name}'", f"set data.name to one of {', '.join(sorted(LOADERS))}")
    return LOADERS[name](Path(root), download, image_size)


def missing(name: str, root: Path, files: str, reason: str) -> UserError:
    return UserError(
        f"{name} not found in {root} ({reason})",
        f"place {files} there, or point data.path at the folder that holds them",
    )


def fetch(name: str, root: Path, files: str, download: bool, action: Callable[[], None]) -> None:
    """Run a download ``action``; turn a disabled download or a network failure into one clear line."""
    if not download:
        raise missing(name, root, files, "data.download is false")
    try:
        action()
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise missing(name, root, files, f"download failed: {err}") from err


# ---------------------------------------------------------------------------------------------- embedded
@loader("digits")
def load_digits(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=0
    )
    return ImageDataset(
        "digits",
        tuple(str(d) for d in range(10)),
        images[np.sort(train_idx)],
        labels[np.sort(train_idx)],
        images[np.sort(test_idx)],
        labels[np.sort(test_idx)],
    )


# ------------------------------------------------------------------------------------------------- CIFAR
@loader("cifar10")
def load_cifar10(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    folder = root / "cifar-10-batches-py"
    files = "cifar-10-python.tar.gz extracted as cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"
    if not (folder / "test_batch").is_file():
        from torchvision.datasets import CIFAR10

        fetch("cifar10", root, files, download, lambda: CIFAR10(str(root), train=True, download=True))
    parts = [formats.read_cifar_batch(folder / f"data_batch_{i}", b"labels") for i in range(1, 6)]
    x_test, y_test = formats.read_cifar_batch(folder / "test_batch", b"labels")
    classes = formats.read_cifar_meta(folder / "batches.meta", b"label_names")
    return ImageDataset(
        "cifar10",
        tuple(classes),
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        x_test,
        y_test,
    )


@loader("cifar100")
def load_cifar100(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    folder = root / "cifar-100-python"
    files = "cifar-100-python.tar.gz extracted as cifar-100-python/ (train, test, meta)"
    if not (folder / "test").is_file():
        from torchvision.datasets import CIFAR100

        fetch("cifar100", root, files, download, lambda: CIFAR100(str(root), train=True, download=True))
    x_train, y_train = formats.read_cifar_batch(folder / "train", b"fine_labels")
    x_test, y_test = formats.read_cifar_batch(folder / "test", b"fine_labels")
    classes = formats.read_cifar_meta(folder / "meta", b"fine_label_names")
    return ImageDataset("cifar100", tuple(classes), x_train, y_train, x_test, y_test)


# ------------------------------------------------------------------------------------------ Fashion-MNIST
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@loader("fashion_mnist")
def load_fashion_mnist(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    files = "the four Fashion-MNIST idx files (train-images-idx3-ubyte.gz, ..., t10k-labels-idx1-ubyte.gz)"

    def locate() -> dict[str, Path] | None:
        for folder in (root, root / "FashionMNIST" / "raw"):  # plain folder, or torchvision's layout
            found = {}
            for key, stem in FASHION_FILES.items():
                for candidate in (folder / f"{stem}.gz", folder / stem):
                    if candidate.is_file():
                        found[key] = candidate
                        break
            if len(found) == len(FASHION_FILES):
                return found
        return None

    paths = locate()
    if paths is None:
        from torchvision.datasets import FashionMNIST

        fetch("fashion_mnist", root, files, download, lambda: FashionMNIST(str(root), train=True, download=True))
        paths = locate()
        if paths is None:
            raise missing("fashion_mnist", root, files, "the download did not produce them")
    arrays = {key: formats.read_idx(path) for key, path in paths.items()}
    x_train = formats.zero_pad_to(formats.as_nhwc(arrays["x_train"], paths["x_train"]), 32)
    x_test = formats.zero_pad_to(formats.as_nhwc(arrays["x_test"], paths["x_test"]), 32)
    return ImageDataset(
        "fashion_mnist",
        FASHION_CLASSES,
        x_train,
        arrays["y_train"].astype(np.int64),
        x_test,
        arrays["y_test"].astype(np.int64),
    )


# ------------------------------------------------------------------------------------------------ MedMNIST
MEDMNIST = {
    "dermamnist": (
        "0744692d530f8e62ec473284d019b0c7",
        (
            "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
            "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
            "vascular lesions",
        ),
    ),
    "bloodmnist": (
        "7053d0359d879ad8a5505303e11de1dc",
        (
            "basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
            "neutrophil", "platelet",
        ),
    ),
}
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"


def load_medmnist(name: str, root: Path, download: bool) -> ImageDataset:
    md5, classes = MEDMNIST[name]
    path = root / f"{name}.npz"
    if not path.is_file():
        from torchvision.datasets.utils import download_url

        url = MEDMNIST_URL.format(name=name)
        fetch(name, root, f"{name}.npz (from {url})", download, lambda: download_url(url, str(root), path.name, md5))
    keys = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")
    arrays = formats.read_npz(path, keys)
    x_train = np.concatenate([arrays["train_images"], arrays["val_images"]])
    y_train = np.concatenate([arrays["train_labels"], arrays["val_labels"]]).reshape(-1).astype(np.int64)
    x_train = formats.lanczos_resize(formats.as_nhwc(x_train, path), 32)
    x_test = formats.lanczos_resize(formats.as_nhwc(arrays["test_images"], path), 32)
    y_test = arrays["test_labels"].reshape(-1).astype(np.int64)
    return ImageDataset(name, classes, x_train, y_train, x_test, y_test)


@loader("dermamnist")
def load_dermamnist(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    return load_medmnist("dermamnist", root, download)


@loader("bloodmnist")
def load_bloodmnist(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    return load_medmnist("bloodmnist", root, download)


# ------------------------------------------------------------------------------------------- image folders
CINIC10_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"


def read_split_folders(
    name: str, root: Path, splits: tuple[str, ...], image_size: int | None, reference: list[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read one or more ImageFolder splits (``root/<split>/<class>/*``) sharing one class list."""
    classes: list[str] | None = reference
    xs, ys = [], []
    for split in splits:
        split_classes, items = formats.list_image_folder(root / split)
        if classes is None:
            classes = split_classes
        elif split_classes != classes:
            raise UserError(
                f"{name}: class folders of {root / split} differ from {root / splits[0]}",
                "use the same class sub-folders in every split",
            )
        files = [f for f, _ in items]
        xs.append(formats.read_images(files, image_size, grayscale=formats.is_grayscale(files[0])))
        ys.append(np.asarray([label for _, label in items], dtype=np.int64))
    assert classes is not None
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) > 1:
        raise UserError(f"{name}: splits have different image shapes {sorted(shapes)}", "set data.image_size")
    return classes, np.concatenate(xs), np.concatenate(ys)


@loader("cinic10")
def load_cinic10(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    if not (root / "test").is_dir():
        from torchvision.datasets.utils import download_and_extract_archive

        fetch(
            "cinic10",
            root,
            f"CINIC-10.tar.gz (from {CINIC10_URL}) extracted to train/, valid/, test/",
            download,
            lambda: download_and_extract_archive(CINIC10_URL, str(root)),
        )
    classes, x_train, y_train = read_split_folders("cinic10", root, ("train", "valid"), image_size)
    _, x_test, y_test = read_split_folders("cinic10", root, ("test",), image_size, classes)
    return ImageDataset("cinic10", tuple(classes), x_train, y_train, x_test, y_test)


@loader("imagefolder")
def load_imagefolder(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise missing("imagefolder", root, "train/<class>/* and test/<class>/* image files", "no train/ or test/ folder")
    classes, x_train, y_train = read_split_folders("imagefolder", root, ("train",), image_size)
    _, x_test, y_test = read_split_folders("imagefolder", root, ("test",), image_size, classes)
    return ImageDataset("imagefolder", tuple(classes), x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------------------------------- npz
@loader("npz")
def load_npz(path: Path, download: bool, image_size: int | None) -> ImageDataset:
    if not path.is_file():
        raise missing("npz", path, "an .npz file with x_train, y_train, x_test, y_test", "no such file")
    arrays = formats.read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    x_train = formats.as_nhwc(arrays["x_train"], path)
    x_test = formats.as_nhwc(arrays["x_test"], path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{path}: x_train {x_train.shape} and x_test {x_test.shape} differ", "use one image shape")
    y_train, y_test = (arrays[k].reshape(-1).astype(np.int64) for k in ("y_train", "y_test"))
    num_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    return ImageDataset("npz", tuple(str(c) for c in range(num_classes)), x_train, y_train, x_test, y_test)


def raw_path(name: str, path: str | None, root: Path) -> Path:
    """Where the raw files of a dataset live: ``data.path`` (relative to the repository root) or
    ``data/raw/<name>``."""
    if path is None:
        return root / "data" / "raw" / name
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate
