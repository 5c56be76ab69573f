"""CIFAR python files are read as data, never as code: official-format pickles load, hostile ones are refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from synthgap.data import load_dataset
from synthgap.data.formats import read_cifar_batch, read_cifar_meta
from synthgap.errors import UserError
from tests.preset_data import Py2Pickler

RNG = np.random.default_rng(0)


def dump(obj: object, path: Path, protocol: str) -> None:
    """Write ``obj`` as the official files are ("py2": numpy 1 names, Python 2 strings) or with a Python 3
    protocol ("default", "highest": protocol 5 rebuilds arrays with ``_frombuffer``)."""
    if protocol == "py2":
        with open(path, "wb") as fh:
            Py2Pickler(fh, protocol=2).dump(obj)
        path.write_bytes(path.read_bytes().replace(b"cnumpy._core.", b"cnumpy.core."))  # numpy 1, as in 2009
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL if protocol == "highest" else None)


def official_batch(n: int, label_key: bytes, num_classes: int) -> tuple[dict, np.ndarray, list[int]]:
    images = RNG.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = [int(i % num_classes) for i in range(n)]
    batch = {
        b"batch_label": b"training batch 1 of 5",
        label_key: labels,
        b"data": images.transpose(0, 3, 1, 2).reshape(n, -1).copy(),  # rows: 1024 R, 1024 G, 1024 B
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    return batch, images, labels


@pytest.mark.parametrize("protocol", ["py2", "default", "highest"])
def test_official_format_batches_load(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch, images, labels = official_batch(12, b"labels", 10)
        dump(batch, folder / name, protocol)
        first = first or (images, labels)
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 12, b"num_vis": 3072}
    dump(meta, folder / "batches.meta", protocol)
    if protocol == "py2":
        raw = (folder / "test_batch").read_bytes()
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw and b"_codecs" not in raw
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.x_train.shape == (60, 32, 32, 3) and ds.x_test.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train[:12], first[0])
    assert ds.y_train[:12].tolist() == first[1] and ds.classes == tuple(f"c{i}" for i in range(10))


@pytest.mark.parametrize("protocol", ["py2", "default"])
def test_cifar100_official_format(tmp_path, protocol):
    batch, images, labels = official_batch(100, b"fine_labels", 100)
    batch[b"coarse_labels"] = [c // 5 for c in labels]
    dump(batch, tmp_path / "train", protocol)
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)], b"coarse_label_names": [b"x"]}
    dump(meta, tmp_path / "meta", protocol)
    x, y = read_cifar_batch(tmp_path / "train", b"fine_labels")
    np.testing.assert_array_equal(x, images)
    assert y.dtype == np.int64 and y.tolist() == labels
    assert read_cifar_meta(tmp_path / "meta", b"fine_label_names")[:2] == ["f0", "f1"]


class Payload:
    """Pickles as a call of ``fn(*args)``: what a hostile data file runs when it is unpickled."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    return {
        "posix.system": Payload(os.system, f"touch {marker}"),
        "io.open": Payload(open, str(marker), "w"),
        "eval": Payload(eval, f"open({str(marker)!r}, 'w').close()"),
    }


@pytest.mark.parametrize("protocol", ["py2", "default"])
@pytest.mark.parametrize("kind", ["posix.system", "io.open", "eval"])
def test_hostile_pickles_run_no_code(tmp_path, kind, protocol):
    marker = tmp_path / "pwned"
    batch, _, _ = official_batch(4, b"labels", 10)
    batch[b"batch_label"] = payloads(marker)[kind]
    path = tmp_path / "data_batch_1"
    dump(batch, path, protocol)
    with pytest.raises(UserError) as info:
        read_cifar_batch(path, b"labels")
    assert not marker.exists()
    assert str(path) in info.value.what and kind in info.value.what and "never holds" in info.value.what
    dump({b"label_names": payloads(marker)[kind]}, tmp_path / "batches.meta", protocol)
    with pytest.raises(UserError, match="batches.meta contains a pickled object"):
        read_cifar_meta(tmp_path / "batches.meta", b"label_names")
    assert not marker.exists()


def test_hostile_batch_stops_load_dataset_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        dump(payloads(marker)["posix.system"], folder / name, "py2")
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", tmp_path, download=False)
    assert not marker.exists()
    assert info.value.line().startswith(f"synthgap: error: data file {folder / 'data_batch_1'} contains")
    assert "posix.system" in info.value.line() and "\n" not in info.value.line()


def test_non_integer_cifar_labels_are_refused(tmp_path):
    batch, _, _ = official_batch(4, b"labels", 10)
    batch[b"labels"] = [1.0, 2.5, 3.0, 4.0]
    dump(batch, tmp_path / "data_batch_1", "default")
    with pytest.raises(UserError, match=r"labels 'labels' in .*data_batch_1 are not integers \(e.g. 2.5\)"):
        read_cifar_batch(tmp_path / "data_batch_1", b"labels")
