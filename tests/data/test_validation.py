"""A dataset unfit for training is refused in prepare_data with one line that names what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthgap.data import load_dataset
from synthgap.data.processed import build_processed
from synthgap.errors import UserError
from tests.data.test_sources import write_png_tree
from tests.stages.test_stages import assert_one_error_line, run_stage_here, workspace


def write_npz(path: Path, y_train, y_test, **extra) -> Path:
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    np.savez(path, x_train=np.zeros((len(y_train), 4, 4), np.uint8), y_train=y_train,
             x_test=np.zeros((len(y_test), 4, 4), np.uint8), y_test=y_test, **extra)
    return path


def refusal(name: str, root: Path) -> str:
    with pytest.raises(UserError) as info:
        load_dataset(name, root, download=False)
    assert "\n" not in info.value.line()
    return info.value.what


# ---------------------------------------------------------------------------------------------- npz
def test_empty_test_split_is_refused_by_the_stage(tmp_path):
    ws = workspace(tmp_path, name="npz", path="mine.npz", **{"val_size: 100": "val_size: 0"})
    write_npz(ws / "mine.npz", np.arange(30) % 3, [])
    assert_one_error_line(run_stage_here("prepare_data", ws), "mine.npz", "the test split holds no images")
    assert not (ws / "data" / "processed").exists()


def test_empty_train_split(tmp_path):
    what = refusal("npz", write_npz(tmp_path / "d.npz", [], [0, 1]))
    assert "the train split holds no images" in what


def test_non_integer_labels_are_refused_not_truncated(tmp_path):
    what = refusal("npz", write_npz(tmp_path / "d.npz", [0.0, 1.0, 2.0], [0.0, 3.7]))
    assert f"the labels 'y_test' in {tmp_path / 'd.npz'} are not integers (e.g. 3.7)" in what
    assert "'y_train'" in refusal("npz", write_npz(tmp_path / "e.npz", [0.0, np.nan], [0]))
    assert "dtype <U1" in refusal("npz", write_npz(tmp_path / "f.npz", ["a", "b"], ["a"]))


def test_integer_valued_float_labels_are_accepted(tmp_path):
    ds = load_dataset("npz", write_npz(tmp_path / "d.npz", [0.0, 1.0, 2.0], [2.0]), download=False)
    assert ds.y_train.dtype == np.int64 and ds.y_train.tolist() == [0, 1, 2] and len(ds.classes) == 3


def test_classes_array_names_the_classes(tmp_path):
    path = write_npz(tmp_path / "d.npz", [0, 1, 2, 1], [2, 0], classes=np.array(["cat", "dog", "emu"]))
    ds = load_dataset("npz", path, download=False)
    assert ds.classes == ("cat", "dog", "emu") and ds.y_test.tolist() == [2, 0]


def test_labels_beyond_the_classes_array(tmp_path):
    what = refusal("npz", write_npz(tmp_path / "d.npz", [0, 1, 2], [1, 3], classes=np.array(["cat", "dog", "emu"])))
    assert str(tmp_path / "d.npz") in what and "test labels [3] lie outside 0..2 (3 classes)" in what
    what = refusal("npz", write_npz(tmp_path / "e.npz", [0, -1], [0], classes=np.array(["cat", "dog"])))
    assert "train labels [-1] lie outside 0..1" in what


def test_bad_classes_array(tmp_path):
    what = refusal("npz", write_npz(tmp_path / "d.npz", [0, 1], [0], classes=np.array(["cat", "cat"])))
    assert f"the array 'classes' in {tmp_path / 'd.npz'} is not a list of distinct class names" in what


def test_a_class_without_training_images_is_named(tmp_path):
    # with a classes array
    path = write_npz(tmp_path / "d.npz", [0, 2, 0], [0, 2], classes=np.array(["cat", "dog", "emu"]))
    what = refusal("npz", path)
    assert "classes without training images: 'dog'" in what and "test split" not in what
    # without one: labels 0..K-1 with a gap
    assert "classes without training images: '1', '3'" in refusal("npz", write_npz(tmp_path / "e.npz", [0, 2, 4], [0]))


def test_test_classes_must_be_train_classes(tmp_path):
    # label 10 in a 10-class set: today it became an 11th class with no training images
    what = refusal("npz", write_npz(tmp_path / "d.npz", np.arange(20) % 10, [3, 10]))
    assert "classes without training images: '10' (the test split has '10')" in what
    path = write_npz(tmp_path / "e.npz", [0, 0, 2], [1, 2], classes=np.array(["cat", "dog", "emu"]))
    assert "classes without training images: 'dog' (the test split has 'dog')" in refusal("npz", path)


# ------------------------------------------------------------------------------------- image folders
@pytest.mark.parametrize("split", ["train", "test"])
def test_empty_class_folder_is_named(tmp_path, split):
    write_png_tree(tmp_path / "train", ["a", "b", "c"], 2, 8)
    write_png_tree(tmp_path / "test", ["a", "b", "c"], 1, 8)
    for image in (tmp_path / split / "b").iterdir():
        image.unlink()
    (tmp_path / split / "b" / "notes.txt").write_text("not an image")
    what = refusal("imagefolder", tmp_path)
    assert what.endswith(f"class folders without images: {tmp_path / split / 'b'}")


def test_empty_cinic_valid_folder_is_named(tmp_path):
    for split in ("train", "valid", "test"):
        write_png_tree(tmp_path / split, ["airplane", "cat"], 1, 8)
    (tmp_path / "valid" / "cat" / "0000.png").unlink()
    assert f"class folders without images: {tmp_path / 'valid' / 'cat'}" in refusal("cinic10", tmp_path)


def test_differing_class_folders_name_the_classes(tmp_path):
    write_png_tree(tmp_path / "train", ["cat", "dog", "emu"], 1, 8)
    write_png_tree(tmp_path / "test", ["cat", "dog", "fox"], 1, 8)
    what = refusal("imagefolder", tmp_path)
    assert f"the class folders of {tmp_path / 'test'} differ from those of {tmp_path / 'train'}" in what
    assert f"only in {tmp_path / 'test'}: 'fox'; only in {tmp_path / 'train'}: 'emu'" in what


def test_test_split_with_fewer_classes_is_named(tmp_path):
    write_png_tree(tmp_path / "train", ["cat", "dog"], 1, 8)
    write_png_tree(tmp_path / "test", ["cat"], 1, 8)
    assert f"only in {tmp_path / 'train'}: 'dog')" in refusal("imagefolder", tmp_path)


# ------------------------------------------------------------------------------------- processed data
def test_validation_hold_out_must_leave_training_images(tmp_path):
    path = write_npz(tmp_path / "d.npz", [0] * 10 + [1] * 10 + [2], [0, 1, 2], classes=np.array(["cat", "dog", "emu"]))
    ds = load_dataset("npz", path, download=False)
    with pytest.raises(UserError) as info:
        build_processed(ds, val_size=3, split_seed=0)
    assert "takes every training image of the d classes 'emu'" in info.value.what
    assert len(build_processed(ds, val_size=0, split_seed=0).y_train) == 21
