"""Every loader on small files written in the dataset's exact on-disk format."""

from __future__ import annotations

import gzip
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthgap.data import load_dataset
from synthgap.data.sources import MEDMNIST, raw_path
from synthgap.errors import UserError

RNG = np.random.default_rng(0)


# ------------------------------------------------------------------------------------------- writers
def write_cifar_batch(path: Path, n: int, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = RNG.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).tolist()
    data = images.transpose(0, 3, 1, 2).reshape(n, -1)  # CIFAR rows: 1024 R, 1024 G, 1024 B
    with open(path, "wb") as fh:
        pickle.dump({b"data": data, label_key: labels, b"batch_label": b"x"}, fh)
    return images, np.asarray(labels)


def write_cifar10(root: Path, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [write_cifar_batch(folder / f"data_batch_{i}", n, b"labels", 10) for i in range(1, 6)]
    write_cifar_batch(folder / "test_batch", n, b"labels", 10)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return train[0]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def write_png_tree(root: Path, classes: list[str], per_class: int, size: int, mode: str = "RGB") -> None:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            Image.fromarray(np.full(shape, 20 * c + i, dtype=np.uint8), mode).save(root / name / f"{i:04d}.png")


def write_medmnist(path: Path, n_train: int, n_val: int, n_test: int, num_classes: int, size: int = 28) -> None:
    def images(n):
        return RNG.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)

    def labels(n):
        return (np.arange(n) % num_classes).reshape(-1, 1)

    np.savez(
        path,
        train_images=images(n_train), train_labels=labels(n_train),
        val_images=images(n_val), val_labels=labels(n_val),
        test_images=images(n_test), test_labels=labels(n_test),
    )


# -------------------------------------------------------------------------------------------- tests
def test_digits_is_embedded_and_stratified():
    ds = load_dataset("digits", Path("/nonexistent"), download=False)
    assert ds.x_train.shape == (1347, 8, 8, 1) and ds.x_test.shape == (450, 8, 8, 1)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    totals = np.bincount(ds.y_train) + np.bincount(ds.y_test)
    assert np.abs(np.bincount(ds.y_test) - totals / 4).max() <= 1  # a stratified quarter


def test_cifar10_pickles_are_read_in_hwc_order(tmp_path):
    first_images, first_labels = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.x_train.shape == (50, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train[:10], first_images)
    np.testing.assert_array_equal(ds.y_train[:10], first_labels)
    assert ds.classes[:2] == ("c0", "c1") and len(ds.classes) == 10


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    images, labels = write_cifar_batch(folder / "train", 100, b"fine_labels", 100)
    write_cifar_batch(folder / "test", 4, b"fine_labels", 100)
    with open(folder / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, fh)
    ds = load_dataset("cifar100", tmp_path, download=False)
    np.testing.assert_array_equal(ds.x_train, images)
    assert len(ds.classes) == 100 and ds.y_test.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("layout", ["plain", "torchvision"])
def test_fashion_mnist_idx_is_zero_padded_to_32(tmp_path, layout):
    folder = tmp_path if layout == "plain" else tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    x = np.full((10, 28, 28), 200, dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", x)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(10))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x[:2])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(2))
    ds = load_dataset("fashion_mnist", tmp_path, download=False)
    assert ds.x_train.shape == (10, 32, 32, 1)
    assert ds.x_train[:, :2].max() == 0 and ds.x_train[:, :, -2:].max() == 0  # zero border
    assert (ds.x_train[:, 2:30, 2:30] == 200).all()
    assert ds.classes[0] == "T-shirt/top"


def test_truncated_idx_is_reported(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    raw = gzip.decompress((tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    for stem, arr in (("train-labels-idx1-ubyte", np.arange(5)), ("t10k-images-idx3-ubyte", np.zeros((2, 28, 28))), ("t10k-labels-idx1-ubyte", np.arange(2))):
        write_idx(tmp_path / f"{stem}.gz", arr)
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("fashion_mnist", tmp_path, download=False)


@pytest.mark.parametrize("name", ["dermamnist", "bloodmnist"])
def test_medmnist_merges_train_and_val_and_resizes_with_lanczos(tmp_path, name):
    num_classes = len(MEDMNIST[name][1])
    write_medmnist(tmp_path / f"{name}.npz", 14, 6, 7, num_classes)
    ds = load_dataset(name, tmp_path, download=False)
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (7, 32, 32, 3)
    assert ds.y_train.shape == (20,) and len(ds.classes) == num_classes


@pytest.mark.parametrize("name", ["dermamnist", "bloodmnist"])
def test_the_64_px_medmnist_release_is_read_from_its_own_file_and_resized_to_32(tmp_path, name):
    """The Equivalence paper's BloodMNIST: MedMNIST+'s <name>_64.npz, 64 -> 32 (a flat image stays flat)."""
    num_classes = len(MEDMNIST[name][1])
    write_medmnist(tmp_path / f"{name}_64.npz", 10, 4, 5, num_classes, size=64)
    with np.load(tmp_path / f"{name}_64.npz") as z:
        arrays = dict(z)
    arrays["train_images"][0] = 77
    np.savez(tmp_path / f"{name}_64.npz", **arrays)
    ds = load_dataset(f"{name}_64", tmp_path, download=False)
    assert ds.name == f"{name}_64" and ds.x_train.shape == (14, 32, 32, 3) and ds.x_test.shape == (5, 32, 32, 3)
    assert (ds.x_train[0] == 77).all()
    write_medmnist(tmp_path / f"{name}.npz", 3, 1, 2, num_classes)  # the 28 px file under the 64 px name: refused
    (tmp_path / f"{name}.npz").replace(tmp_path / f"{name}_64.npz")
    with pytest.raises(UserError, match=f"28x28 images, not the 64 px release; use MedMNIST's {name}_64.npz"):
        load_dataset(f"{name}_64", tmp_path, download=False)
    with pytest.raises(UserError) as err:
        load_dataset(f"{name}_64", tmp_path / "empty", download=False)
    assert f"{name}_64.npz (from https://zenodo.org/records/10519652/files/{name}_64.npz" in err.value.fix


def test_cinic10_merges_train_and_valid(tmp_path):
    classes = ["airplane", "cat"]
    for split, n in (("train", 3), ("valid", 2), ("test", 2)):
        write_png_tree(tmp_path / split, classes, n, 32)
    ds = load_dataset("cinic10", tmp_path, download=False)
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.classes == ("airplane", "cat")
    assert ds.x_train[0, 0, 0, 0] == 0 and ds.x_test[-1, 0, 0, 0] == 21


def test_imagefolder_grayscale_and_resize(tmp_path):
    write_png_tree(tmp_path / "train", ["a", "b", "c"], 2, 12, mode="L")
    write_png_tree(tmp_path / "test", ["a", "b", "c"], 1, 12, mode="L")
    ds = load_dataset("imagefolder", tmp_path, download=False)
    assert ds.x_train.shape == (6, 12, 12, 1) and ds.y_train.tolist() == [0, 0, 1, 1, 2, 2]
    resized = load_dataset("imagefolder", tmp_path, download=False, image_size=8)
    assert resized.x_train.shape == (6, 8, 8, 1)


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    write_png_tree(tmp_path / "train", ["a"], 1, 12)
    write_png_tree(tmp_path / "train", ["b"], 1, 16)
    write_png_tree(tmp_path / "test", ["a", "b"], 1, 12)
    with pytest.raises(UserError, match="data.image_size"):
        load_dataset("imagefolder", tmp_path, download=False)


def test_imagefolder_corrupt_image(tmp_path):
    write_png_tree(tmp_path / "train", ["a", "b"], 2, 8)
    write_png_tree(tmp_path / "test", ["a", "b"], 1, 8)
    (tmp_path / "train" / "a" / "0001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="0001.png is truncated or corrupt"):
        load_dataset("imagefolder", tmp_path, download=False)


@pytest.mark.parametrize("channels", [None, 3])
def test_npz_accepts_nhw_and_nhwc(tmp_path, channels):
    shape = (10, 8, 8) if channels is None else (10, 8, 8, channels)
    np.savez(tmp_path / "d.npz", x_train=np.zeros(shape, np.uint8), y_train=np.arange(10) % 3,
             x_test=np.zeros((4, *shape[1:]), np.uint8), y_test=np.arange(4) % 3)
    ds = load_dataset("npz", tmp_path / "d.npz", download=False)
    assert ds.x_train.shape == (10, 8, 8, channels or 1) and ds.classes == ("0", "1", "2")


def test_truncated_npz_is_one_clear_error(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((100, 8, 8), np.uint8), y_train=np.zeros(100),
             x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.zeros(4))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("npz", tmp_path / "d.npz", download=False)


def test_npz_missing_arrays_and_wrong_dtype(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(UserError, match="lacks the arrays"):
        load_dataset("npz", tmp_path / "d.npz", download=False)
    np.savez(tmp_path / "e.npz", x_train=np.zeros((4, 8, 8)), y_train=np.zeros(4), x_test=np.zeros((4, 8, 8)), y_test=np.zeros(4))
    with pytest.raises(UserError, match="uint8"):
        load_dataset("npz", tmp_path / "e.npz", download=False)


def test_truncated_cifar_pickle(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="data_batch_3 is truncated or corrupt"):
        load_dataset("cifar10", tmp_path, download=False)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "fashion_mnist", "dermamnist", "bloodmnist", "cinic10"])
def test_missing_dataset_without_download_says_what_to_place_where(tmp_path, name):
    with pytest.raises(UserError) as info:
        load_dataset(name, tmp_path / "raw", download=False)
    assert str(tmp_path / "raw") in info.value.what and "place" in info.value.fix


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.setattr("torchvision.datasets.utils.urllib.request.urlopen", offline, raising=False)
    with pytest.raises(UserError) as info:
        load_dataset("dermamnist", tmp_path, download=True)
    assert "download failed" in info.value.what and "dermamnist.npz" in info.value.fix
    with pytest.raises(UserError, match="download failed"):
        load_dataset("cifar10", tmp_path, download=True)


def test_unknown_dataset():
    with pytest.raises(UserError, match="unknown dataset 'nosuch'"):
        load_dataset("nosuch", Path("."))


def test_raw_path_is_anchored_at_the_root(tmp_path):
    raw = tmp_path / "data" / "raw"
    assert raw_path("cifar10", None, tmp_path, raw) == raw / "cifar10"
    assert raw_path("npz", "x/d.npz", tmp_path, raw) == tmp_path / "x" / "d.npz"
    assert raw_path("npz", "/abs/d.npz", tmp_path, raw) == Path("/abs/d.npz")


def test_npz_of_28_px_images_is_resized_to_data_image_size(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x[:2], y_test=np.array([0, 1]))
    ds = load_dataset("npz", tmp_path / "d.npz", download=False, image_size=32)
    assert ds.x_train.shape == (4, 32, 32, 1) and ds.x_test.shape == (2, 32, 32, 1) and ds.name == "d"
    expected = np.asarray(Image.fromarray(x[1], "L").resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(ds.x_train[1, :, :, 0], expected)
    assert load_dataset("npz", tmp_path / "d.npz", download=False).x_train.shape == (4, 28, 28, 1)


def test_a_gan_for_28_px_images_stops_with_the_fix():
    from synthgap.errors import UserError
    from synthgap.models.biggan import GanSpec

    with pytest.raises(UserError, match="4 \\* 2\\^k.*these are 28 px") as info:
        GanSpec(num_classes=10, image_size=28, channels=1)
    assert "data.image_size" in info.value.line()
