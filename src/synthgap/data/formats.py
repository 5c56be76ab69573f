"""Readers for the exact on-disk formats of the supported datasets.

Every reader returns images as ``uint8`` arrays of shape (N, H, W, C) with C in {1, 3} and labels as
``int64`` arrays of shape (N,). A file that exists but cannot be parsed raises :class:`UserError` naming
the file, so a truncated download never surfaces as a bare traceback. Data files cannot run code: CIFAR
pickles go through :class:`CifarUnpickler`, which rebuilds numpy arrays only, and .npz files are read
without pickles.
"""

from __future__ import annotations

import gzip
import pickle
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from synthgap.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def corrupt(path: Path, detail: str) -> UserError:
    return UserError(
        f"data file {path} is truncated or corrupt ({detail})",
        "delete it and download it again, or replace it with an intact copy",
    )


def as_nhwc(images: np.ndarray, path: Path) -> np.ndarray:
    """Accept (N,H,W) or (N,H,W,C) uint8 and return (N,H,W,C) with C in {1,3}."""
    if images.dtype != np.uint8:
        raise UserError(f"images in {path} have dtype {images.dtype}", "store images as uint8 (0..255)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(
            f"images in {path} have shape {images.shape}", "store them as (N,H,W) or (N,H,W,C) with C = 1 or 3"
        )
    return np.ascontiguousarray(images)


def as_labels(values: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Labels as a flat int64 array. Integer-valued floats (3.0) are accepted; 3.7, NaN or text is refused
    rather than truncated."""
    values = np.asarray(values).reshape(-1)
    fix = "store class indices as integers 0..num_classes-1"
    if values.dtype.kind == "f":
        wrong = values[~np.isfinite(values) | (values != np.round(values))]
        if len(wrong):
            raise UserError(f"the labels {key!r} in {path} are not integers (e.g. {wrong[0]:g})", fix)
    elif values.dtype.kind not in "iu":
        raise UserError(f"the labels {key!r} in {path} have dtype {values.dtype}, not integers", fix)
    return values.astype(np.int64)


# ----------------------------------------------------------------------------------- CIFAR python batches
# The only globals a CIFAR python file may name: numpy's array and scalar rebuilding, under numpy 1's and
# numpy 2's module names (``_frombuffer`` for files re-pickled with protocol 5). Lists, dicts, bytes, str
# and ints need no global. Anything else (``os.system``, ``builtins.eval``, ...) would run code.
CIFAR_GLOBALS = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")]
    + [(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")]
)


class CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR python file without running code: it rebuilds numpy arrays and nothing else."""

    def __init__(self, fh, path: Path):
        super().__init__(fh, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_GLOBALS:
            raise UserError(
                f"data file {self.path} contains a pickled object of type {module}.{name}, "
                "which a CIFAR batch never holds",
                "it is not an original CIFAR file: delete it and download the dataset again",
            )
        return super().find_class(module, name)


UNPICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError, AttributeError, ImportError,
)


def unpickle_cifar(path: Path) -> object:
    with open(path, "rb") as fh:
        return CifarUnpickler(fh, path).load()


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch (a pickle by definition of the format: the only pickles synthgap reads, and
    through :class:`CifarUnpickler`)."""
    try:
        batch = unpickle_cifar(path)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = as_labels(np.asarray(batch[label_key]), path, label_key.decode())
    except UNPICKLE_ERRORS as err:
        raise corrupt(path, type(err).__name__) from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise corrupt(path, f"data shape {data.shape} with {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_cifar_meta(path: Path, names_key: bytes) -> list[str]:
    try:
        return [name.decode() for name in unpickle_cifar(path)[names_key]]
    except UNPICKLE_ERRORS as err:
        raise corrupt(path, type(err).__name__) from err


# ------------------------------------------------------------------------------------------ idx (MNIST-like)
def read_idx(path: Path) -> np.ndarray:
    """An idx file, gzip-compressed or not (MNIST / Fashion-MNIST format)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise corrupt(path, str(err)) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise corrupt(path, "bad idx magic number")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(path, "header cut short")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise corrupt(path, f"{len(raw) - header} bytes of data for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


# ------------------------------------------------------------------------------------------------ npz files
def read_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an .npz file (object arrays refused: no pickles), and those of ``optional`` it
    holds."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise UserError(
                    f"{path} lacks the arrays {missing} (it has {sorted(archive.files)})",
                    f"write an .npz with {', '.join(keys)}",
                )
            return {k: archive[k] for k in (*keys, *optional) if k in archive.files}
    except UserError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise corrupt(path, str(err).splitlines()[0] if str(err) else type(err).__name__) from err


# ------------------------------------------------------------------------------------------- image folders
def list_image_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted sub-folder names) and (file, label) pairs of an ImageFolder-layout directory."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{root} has no class sub-folders", f"lay images out as {root}/<class>/<image>")
    items = [
        (f, label)
        for label, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise UserError(f"{root} holds no images", f"put image files ({', '.join(IMAGE_SUFFIXES)}) in {root}/<class>/")
    return classes, items


def read_images(files: list[Path], image_size: int | None, grayscale: bool) -> np.ndarray:
    """Decode image files (in parallel threads) into one (N,H,W,C) uint8 array."""

    def decode(path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if grayscale else "RGB")
                if image_size is not None:
                    img = resize_and_center_crop(img, image_size)
                return np.asarray(img, dtype=np.uint8)
        except OSError as err:
            raise corrupt(path, str(err)) from err

    with ThreadPoolExecutor(max_workers=8) as pool:
        arrays = list(pool.map(decode, files))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise UserError(
            f"images under {files[0].parent.parent} have different sizes {sorted(shapes)[:3]}",
            "set data.image_size to resize them to one size",
        )
    return as_nhwc(np.stack(arrays), files[0].parent)


def is_grayscale(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            return img.mode in ("1", "L", "I", "I;16", "F")
    except OSError as err:
        raise corrupt(path, str(err)) from err


def resize_and_center_crop(img: Image.Image, size: int) -> Image.Image:
    scale = size / min(img.size)
    new = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
    img = img.resize(new, Image.Resampling.LANCZOS)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def lanczos_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N,H,W,C) uint8 images to size x size with Lanczos (GaFi's DermaMNIST 28 -> 32)."""
    mode = "L" if images.shape[-1] == 1 else "RGB"
    out = [
        np.asarray(Image.fromarray(img.squeeze(-1) if mode == "L" else img, mode).resize((size, size), Image.Resampling.LANCZOS))
        for img in images
    ]
    return as_nhwc(np.stack(out), Path("<resized>"))


def zero_pad_to(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N,H,W,C) images symmetrically to size x size (GaFi's Fashion-MNIST 28 -> 32)."""
    n, h, w, c = images.shape
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))
