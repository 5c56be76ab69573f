"""The supported datasets: where their files live, how to download them, and how to load them.

``load_dataset(name, root, download, image_size)`` returns an :class:`ImageDataset` of uint8 NHWC arrays
with the official train/test split. Per-dataset rules follow the papers:

- ``digits``: scikit-learn's bundled 8x8 digits (the embedded default, no download); 0..16 is scaled to
  0..255 and a fixed stratified quarter is the test set.
- ``fashion_mnist``: zero-padded 28 -> 32 (GaFi).
- ``dermamnist``, ``bloodmnist``: MedMNIST 28 px, Lanczos-resized to 32 (GaFi for DermaMNIST); the official
  train and validation splits are merged into the training set (GaFi's 8,010 DermaMNIST training images are
  7,007 + 1,003). ``dermamnist_64``, ``bloodmnist_64``: the same from MedMNIST+'s 64 px release
  (``<name>_64.npz``), Lanczos-resized 64 -> 32: the Equivalence paper's BloodMNIST ("we used the 64x64
  resolution version and resized it to 32x32").
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


def quoted(names, limit: int = 10) -> str:
    """``'a', 'b'`` for the first ``limit`` names, then ``and N more``."""
    names = [repr(str(n)) for n in names]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass(frozen=True)
class ImageDataset:
    """A dataset's images and labels with its official split. Built only if it is fit for training: both
    splits hold images of one shape, every label names a class, and every class has training images (so
    every test class is a train class). ``source`` names its files in error messages."""

    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        where = f"{self.name} ({self.source})" if self.source else self.name
        k = len(self.classes)
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
                raise UserError(f"{where}: bad {split} split {x.shape}/{y.shape}", "check the data files")
            if not len(y):
                raise UserError(f"{where}: the {split} split holds no images", "put images in both the train and the test split")
            outside = np.unique(y[(y < 0) | (y >= k)])
            if len(outside):
                raise UserError(
                    f"{where}: {split} labels {outside[:10].tolist()} lie outside 0..{k - 1} ({k} classes)",
                    "labels must be integers 0..num_classes-1",
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise UserError(
                f"{where}: train images {self.x_train.shape[1:]} and test images {self.x_test.shape[1:]} differ",
                "use one image shape (or set data.image_size)",
            )
        untrained = np.flatnonzero(np.bincount(self.y_train, minlength=k) == 0)
        if len(untrained):
            tested = np.intersect1d(untrained, self.y_test)
            also = f" (the test split has {quoted(self.classes[c] for c in tested)})" if len(tested) else ""
            raise UserError(
                f"{where}: classes without training images: {quoted(self.classes[c] for c in untrained)}{also}",
                "every class needs images in the train split: add some, or drop the class from the dataset",
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
        str(folder),
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
    return ImageDataset("cifar100", tuple(classes), x_train, y_train, x_test, y_test, str(folder))


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
        str(paths["x_train"].parent),
    )


# ------------------------------------------------------------------------------------------------ MedMNIST
MEDMNIST = {  # name -> ({release size: md5 of <name>.npz (28) / <name>_<size>.npz}, class names)
    "dermamnist": (
        {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f"},
        (
            "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
            "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
            "vascular lesions",
        ),
    ),
    "bloodmnist": (
        {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b"},
        (
            "basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
            "neutrophil", "platelet",
        ),
    ),
}
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"


def load_medmnist(name: str, root: Path, download: bool, release: int = 28) -> ImageDataset:
    """The MedMNIST dataset ``name`` from its ``release`` (28: MedMNIST v2's ``<name>.npz``; 64: MedMNIST+'s
    ``<name>_64.npz``), train + validation as the training set, every image Lanczos-resized to 32."""
    md5s, classes = MEDMNIST[name]
    file = f"{name}.npz" if release == 28 else f"{name}_{release}.npz"
    path = root / file
    if not path.is_file():
        from torchvision.datasets.utils import download_url

        url = MEDMNIST_URL.format(name=file.removesuffix(".npz"))
        fetch(name, root, f"{file} (from {url})", download, lambda: download_url(url, str(root), file, md5s[release]))
    keys = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")
    arrays = formats.read_npz(path, keys)
    x_train = formats.as_nhwc(np.concatenate([arrays["train_images"], arrays["val_images"]]), path)
    if x_train.shape[1:3] != (release, release):
        raise UserError(f"{path} holds {x_train.shape[1]}x{x_train.shape[2]} images, not the {release} px release",
                        f"use MedMNIST's {file}, or data.name {name}{'' if release != 28 else '_64'} for this file")
    y_train = formats.as_labels(np.concatenate([arrays["train_labels"], arrays["val_labels"]]), path, "train/val_labels")
    x_train = formats.lanczos_resize(x_train, 32)
    x_test = formats.lanczos_resize(formats.as_nhwc(arrays["test_images"], path), 32)
    y_test = formats.as_labels(arrays["test_labels"], path, "test_labels")
    return ImageDataset(name if release == 28 else f"{name}_{release}", classes, x_train, y_train, x_test, y_test,
                        str(path))


@loader("dermamnist")
def load_dermamnist(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    return load_medmnist("dermamnist", root, download)


@loader("bloodmnist")
def load_bloodmnist(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    return load_medmnist("bloodmnist", root, download)


@loader("dermamnist_64")
def load_dermamnist_64(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    return load_medmnist("dermamnist", root, download, release=64)


@loader("bloodmnist_64")
def load_bloodmnist_64(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    return load_medmnist("bloodmnist", root, download, release=64)


# ------------------------------------------------------------------------------------------- image folders
CINIC10_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz"


def read_image_folders(
    name: str, root: Path, train: tuple[str, ...], test: tuple[str, ...], image_size: int | None
) -> ImageDataset:
    """Read ImageFolder splits (``root/<split>/<class>/*``) sharing one class list: the ``train`` splits
    merged into the train split, the ``test`` splits into the test split. An empty class folder is refused."""
    first, classes = None, None
    xs: dict[str, np.ndarray] = {}
    ys: dict[str, np.ndarray] = {}
    for split in train + test:
        folder = root / split
        split_classes, items = formats.list_image_folder(folder)
        if first is None:
            first, classes = folder, split_classes
        elif split_classes != classes:
            differ = [
                f"only in {place}: {quoted(sorted(set(these) - set(those)))}"
                for place, these, those in ((folder, split_classes, classes), (first, classes, split_classes))
                if set(these) - set(those)
            ]
            raise UserError(
                f"{name}: the class folders of {folder} differ from those of {first} ({'; '.join(differ)})",
                "use the same class sub-folders in every split",
            )
        counts = np.bincount([label for _, label in items], minlength=len(split_classes))
        if (counts == 0).any():
            empty = [str(folder / split_classes[c]) for c in np.flatnonzero(counts == 0)]
            raise UserError(
                f"{name}: class folders without images: {', '.join(empty)}",
                f"put image files ({', '.join(formats.IMAGE_SUFFIXES)}) in them, or remove the class from every split",
            )
        files = [f for f, _ in items]
        xs[split] = formats.read_images(files, image_size, grayscale=formats.is_grayscale(files[0]))
        ys[split] = np.asarray([label for _, label in items], dtype=np.int64)
    shapes = {x.shape[1:] for x in xs.values()}
    if len(shapes) > 1:
        raise UserError(f"{name}: splits have different image shapes {sorted(shapes)}", "set data.image_size")
    return ImageDataset(
        name,
        tuple(classes),
        np.concatenate([xs[s] for s in train]),
        np.concatenate([ys[s] for s in train]),
        np.concatenate([xs[s] for s in test]),
        np.concatenate([ys[s] for s in test]),
        str(root),
    )


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
    return read_image_folders("cinic10", root, ("train", "valid"), ("test",), image_size)


@loader("imagefolder")
def load_imagefolder(root: Path, download: bool, image_size: int | None) -> ImageDataset:
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise missing("imagefolder", root, "train/<class>/* and test/<class>/* image files", "no train/ or test/ folder")
    return read_image_folders(root.name, root, ("train",), ("test",), image_size)  # tables name the folder


# --------------------------------------------------------------------------------------------------- npz
@loader("npz")
def load_npz(path: Path, download: bool, image_size: int | None) -> ImageDataset:
    """An .npz with ``x_train, y_train, x_test, y_test`` and optionally ``classes`` (the class names, whose
    indices the labels are); without ``classes`` the labels 0..K-1 are the class names. ``image_size``
    resizes the images to that square size."""
    if not path.is_file():
        raise missing("npz", path, "an .npz file with x_train, y_train, x_test, y_test", "no such file")
    arrays = formats.read_npz(path, ("x_train", "y_train", "x_test", "y_test"), optional=("classes",))
    x_train = formats.as_nhwc(arrays["x_train"], path)
    x_test = formats.as_nhwc(arrays["x_test"], path)
    if image_size is not None:  # e.g. 28 -> 32 for the GAN (Lanczos, as GaFi resizes DermaMNIST)
        x_train, x_test = (x if x.shape[1:3] == (image_size, image_size) else formats.lanczos_resize(x, image_size)
                           for x in (x_train, x_test))
    y_train, y_test = (formats.as_labels(arrays[k], path, k) for k in ("y_train", "y_test"))
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US" or not len(names) or len(set(names)) != len(names):
            raise UserError(
                f"the array 'classes' in {path} is not a list of distinct class names "
                f"({names.dtype}, shape {names.shape})",
                "store classes=np.array(['name0', 'name1', ...]), one string per class index, or leave it out",
            )
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    else:
        classes = tuple(str(c) for c in range(int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1))
    return ImageDataset(path.stem, classes, x_train, y_train, x_test, y_test, str(path))  # tables name the file


def raw_path(name: str, path: str | None, root: Path, raw: Path) -> Path:
    """Where the raw files of a dataset live: ``data.path`` (relative to the repository ``root``) or
    ``<raw>/<name>``, ``raw`` being the folder of downloads (``data/raw``)."""
    if path is None:
        return raw / name
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate
