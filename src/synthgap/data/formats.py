"""Readers for the exact on-disk formats of the supported datasets.

Every reader returns images as ``uint8`` arrays of shape (N, H, W, C) with C in {1, 3} and labels as
``int64`` arrays of shape (N,). A file that exists but cannot be parsed raises :class:`UserError` naming
the file, so a truncated download never surfaces as a bare traceback.
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


# ----------------------------------------------------------------------------------- CIFAR python batches
def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch (a pickle by definition of the format: the only pickles synthgap reads)."""
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, IndexError) as err:
        raise corrupt(path, type(err).__name__) from err
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise corrupt(path, f"data shape {data.shape} with {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_cifar_meta(path: Path, names_key: bytes) -> list[str]:
    try:
        with open(path, "rb") as fh:
            meta = pickle.load(fh, encoding="bytes")
        return [name.decode() for name in meta[names_key]]
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, AttributeError) as err:
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
def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise UserError(
                    f"{path} lacks the arrays {missing} (it has {sorted(archive.files)})",
                    f"write an .npz with {', '.join(keys)}",
                )
            return {k: archive[k] for k in keys}
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
