"""EDM's augmentation pipe: the geometric core against known images, the clean mode, the label layout and
how often each transform fires, all computed without the pipe's own code."""

from __future__ import annotations

import math

import pytest
import torch

from synthgap.diffusion.augment import AUGMENT_DIM, AugmentPipe, warp


def homogeneous(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32).expand(2, 3, 3)


def test_warp_rotates_a_quarter_turn_as_rot90_and_translates_by_whole_pixels():
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    quarter = homogeneous([[0, -1, 0], [1, 0, 0], [0, 0, 1]])  # output (x, y) shows the input at (-y, x)
    torch.testing.assert_close(warp(images, quarter), torch.rot90(images, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    right = homogeneous([[1, 0, 1], [0, 1, 0], [0, 0, 1]])  # output x shows input x + 1: content moves left
    torch.testing.assert_close(warp(images, right)[..., :-1], images[..., 1:])
    down = homogeneous([[1, 0, 0], [0, 1, -2], [0, 0, 1]])  # output y shows input y - 2: content moves down
    torch.testing.assert_close(warp(images, down)[..., 2:, :], images[..., :-2, :])


def test_without_transforms_images_pass_unchanged_with_zero_labels():
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    out, labels = AugmentPipe(p=0.0, xflip=False)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)
    assert labels.shape == (6, AUGMENT_DIM) and not labels.any()


def test_each_transform_fires_with_probability_p_and_is_written_in_its_label():
    """EDM's layout: x-flip (always eligible: half the images), y-flip (p / 2), scale, rotation cos - 1 and sin,
    anisotropy w cos r and w sin r (the axis rotated half the time), translation x and y (each p)."""
    n, p = 40_000, 0.12
    images = torch.zeros(n, 1, 4, 4)
    _, labels = AugmentPipe(p=p)(images, torch.Generator().manual_seed(3))
    fired = (labels != 0).float().mean(0)
    expected = torch.tensor([0.5, p / 2, p, p, p, p, p / 2, p, p])
    se = (expected * (1 - expected) / n).sqrt()
    assert ((fired - expected).abs() < 5 * se).all(), fired
    # a flipped image's label is 1, a rotation's labels lie on the unit circle shifted by (-1, 0)
    assert set(labels[:, 0].unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close((labels[:, 3] + 1) ** 2 + labels[:, 4] ** 2, torch.ones(n))


def test_flips_follow_their_labels_and_draws_repeat_with_the_seed():
    images = torch.arange(64 * 1 * 6 * 6, dtype=torch.float32).view(64, 1, 6, 6)
    pipe = AugmentPipe(p=0.0, xflip=True)  # only x-flips: exact, no resampling error
    out, labels = pipe(images, torch.Generator().manual_seed(5))
    flipped = labels[:, 0] == 1
    assert 0 < flipped.sum() < 64
    torch.testing.assert_close(out[flipped], images[flipped].flip(3), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out[~flipped], images[~flipped], atol=1e-4, rtol=1e-5)
    again, labels_again = pipe(images, torch.Generator().manual_seed(5))
    assert torch.equal(again, out) and torch.equal(labels_again, labels)


def test_without_xflip_no_image_is_mirrored():
    _, labels = AugmentPipe(p=1.0, xflip=False)(torch.zeros(500, 1, 4, 4), torch.Generator().manual_seed(0))
    assert not labels[:, 0].any() and labels[:, 1].any()


@pytest.mark.parametrize("angle", [math.pi / 2, -math.pi / 2])
def test_a_rotation_label_matches_the_image_rotation(angle):
    """With every transform but rotation drawn as identity, the image is the input rotated by the labelled angle."""
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    c, s = math.cos(angle), math.sin(angle)
    rotated = warp(images, homogeneous([[c, -s, 0], [s, c, 0], [0, 0, 1]]))
    k = 1 if angle > 0 else -1
    torch.testing.assert_close(rotated, torch.rot90(images, k, dims=(2, 3)), atol=1e-4, rtol=0)


def test_borders_mirror_without_repeating_the_edge_pixel_and_are_zero_beyond_one_image_size():
    """EDM pads by reflection ('reflect': ... 2 1 | 0 1 2 3 | 2 1 ...) up to one image size, zeros beyond."""
    row = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4).expand(2, 1, 4, 4)
    two_left = homogeneous([[1, 0, -2], [0, 1, 0], [0, 0, 1]])  # output x shows input x - 2
    assert warp(row, two_left)[0, 0, 0].tolist() == pytest.approx([2.0, 1.0, 0.0, 1.0])
    far = homogeneous([[1, 0, -9], [0, 1, 0], [0, 0, 1]])  # 9 pixels: past the 3-pixel mirror of a 4-pixel row
    assert not warp(row, far)[..., :2].any()
