"""Out-of-distribution test sets: ImageNet-V2 / -Sketch / -R / -A layouts restricted to the training classes
(fabricated folders in each release's layout), the embedded digits' shifted test split, and digits in held-out fonts."""

import numpy as np
import pytest
from PIL import Image

from synthgap.config import OodSetConfig
from synthgap.data.ood import IMAGENET_INDEX, load_ood, shifted
from synthgap.errors import UserError

CLASSES = ("n01440764", "n02102040", "n03888605")  # tench, English springer, parachute: ImageNet 0, 217, 701


def write_images(folder, values, size=12):
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full((size, size, 3), v, np.uint8)).save(folder / f"{i}.jpeg", quality=100)


def test_imagenet_v2_folders_are_class_indices_and_only_the_training_classes_are_read(tmp_path):
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    write_images(root / "0", [10, 20])        # tench
    write_images(root / "217", [30])          # English springer
    write_images(root / "701", [40, 50, 60])  # parachute
    write_images(root / "1", [99])            # goldfish: not a training class
    x_test = np.zeros((5, 8, 8, 3), np.uint8)
    ood = load_ood(OodSetConfig(name="v2", format="imagenet_v2", path=root.name), CLASSES, x_test, np.zeros(5), tmp_path, 0)
    assert ood.x.shape == (6, 8, 8, 3) and ood.x.dtype == np.uint8  # resized to the dataset's size
    assert ood.y.tolist() == [0, 0, 1, 2, 2, 2] and ood.covered == CLASSES
    assert [int(v) for v in ood.x[:, 4, 4, 0]] == pytest.approx([10, 20, 30, 40, 50, 60], abs=2)  # JPEG rounding
    assert IMAGENET_INDEX["n03888605"] == 701


def test_wnid_folders_with_absent_classes_cover_what_they_hold(tmp_path):
    """ImageNet-R and -A hold 200 of ImageNet's classes: a training class without a folder is left out and
    ``covered`` says which are there; grey datasets read grey."""
    write_images(tmp_path / "imagenet-r" / "n02102040", [100, 120])
    write_images(tmp_path / "imagenet-r" / "n09999999", [1])
    x_test = np.zeros((3, 8, 8, 1), np.uint8)
    ood = load_ood(OodSetConfig(name="r", format="imagenet_r", path="imagenet-r"), CLASSES, x_test, np.zeros(3), tmp_path, 0)
    assert ood.x.shape == (2, 8, 8, 1) and ood.y.tolist() == [1, 1] and ood.covered == ("n02102040",)


def test_missing_or_foreign_ood_folders_are_one_line_errors(tmp_path):
    x_test = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(UserError, match=r"out-of-distribution set s: folder .*sketch not found; unpack imagenet_sketch"):
        load_ood(OodSetConfig(name="s", format="imagenet_sketch", path="sketch"), CLASSES, x_test, np.zeros(1), tmp_path, 0)
    write_images(tmp_path / "sketch" / "n09999999", [1])
    with pytest.raises(UserError, match="holds no images of the dataset's classes"):
        load_ood(OodSetConfig(name="s", format="imagenet_sketch", path="sketch"), CLASSES, x_test, np.zeros(1), tmp_path, 0)
    write_images(tmp_path / "v2" / "0", [1])
    with pytest.raises(UserError, match=r"no ImageNet class index is known here for \['cat'\]"):
        load_ood(OodSetConfig(name="v", format="imagenet_v2", path="v2"), ("cat",), x_test, np.zeros(1), tmp_path, 0)


def ink_axis(image):
    """Angle (degrees, of the principal axis) and spread (sd along it) of the pixels above half intensity."""
    rows, cols = np.nonzero(image[..., 0] > 128)
    points = np.stack([cols - cols.mean(), rows - rows.mean()])
    values, vectors = np.linalg.eigh(np.cov(points))
    axis = vectors[:, -1]
    return np.degrees(np.arctan2(axis[1], axis[0])) % 180, np.sqrt(values[-1])


def test_shifted_digits_are_rotated_15_to_30_degrees_and_shrunk_with_labels_kept():
    """A horizontal bar through the centre of a 41-pixel image: after the shift its principal axis is tilted by
    15-30 degrees one way or the other and its length shrunk to 75-95 % (with discretisation slack)."""
    x = np.zeros((40, 41, 41, 1), np.uint8)
    x[:, 19:22, 6:35] = 255
    y = np.arange(40) % 10
    spec = OodSetConfig(name="digits_shifted", format="digits_shifted")
    ood = load_ood(spec, tuple(str(i) for i in range(10)), x, y, None, seed=3)
    assert ood.x.shape == x.shape and ood.x.dtype == np.uint8 and np.array_equal(ood.y, y)
    assert np.array_equal(ood.x, shifted(x, 3)) and not np.array_equal(shifted(x, 3), shifted(x, 4))
    _, before = ink_axis(x[0])
    tilts, shrinks = zip(*(ink_axis(image) for image in ood.x))
    tilts = [min(t, 180 - t) for t in tilts]
    assert 14 < min(tilts) and max(tilts) < 31
    assert 0.72 < min(shrinks) / before and max(shrinks) / before < 0.98
    assert any(t > 90 for t, _ in (ink_axis(image) for image in ood.x)) and any(t < 90 for t, _ in (ink_axis(i) for i in ood.x))


def test_ood_specs_need_a_path_except_the_generated_digits():
    with pytest.raises(ValueError, match="formats digits_shifted, digits_fonts take no path, every other format one"):
        OodSetConfig(name="a", format="imagenet_a")
    for generated in ("digits_shifted", "digits_fonts"):
        with pytest.raises(ValueError, match="take no path"):
            OodSetConfig(name="d", format=generated, path="x")


def test_held_out_fonts_are_as_many_balanced_digits_as_the_test_split_in_its_shape():
    x_test, y_test = np.zeros((60, 8, 8, 1), np.uint8), np.arange(60) % 10
    digits = tuple(str(d) for d in range(10))
    ood = load_ood(OodSetConfig(name="f", format="digits_fonts"), digits, x_test, y_test, None, seed=5)
    assert ood.x.shape == (60, 8, 8, 1) and ood.x.dtype == np.uint8 and ood.covered == digits
    assert np.bincount(ood.y).tolist() == [6] * 10
    again = load_ood(OodSetConfig(name="f", format="digits_fonts"), digits, x_test, y_test, None, seed=5)
    assert np.array_equal(again.x, ood.x)
    with pytest.raises(UserError, match="digits_fonts draws the digits 0-9"):
        load_ood(OodSetConfig(name="f", format="digits_fonts"), CLASSES, x_test, y_test, None, seed=5)
