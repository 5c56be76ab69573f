"""synthgap.compare: the pieces of the cross-family table, on inputs whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthgap import compare
from synthgap.errors import UserError
from synthgap.gafi.sampling import save_synthetic


def test_real_equivalent_interpolates_in_log_n_and_bounds_outside_the_curve():
    curve = [(100.0, 60.0), (400.0, 80.0)]
    assert compare.real_equivalent(curve, 70.0) == ("=", pytest.approx(200.0))  # halfway in log n: sqrt(100 * 400)
    assert compare.real_equivalent(curve, 60.0) == ("=", 100.0)
    assert compare.real_equivalent(curve, 80.0) == ("=", pytest.approx(400.0))
    assert compare.real_equivalent(curve, 59.9) == ("<", 100.0)
    assert compare.real_equivalent(curve, 80.1) == (">", 400.0)
    plateau = [(100.0, 60.0), (200.0, 70.0), (400.0, 70.0), (800.0, 90.0)]
    assert compare.real_equivalent(plateau, 70.0) == ("=", pytest.approx(200.0))  # the first size that reaches it
    assert compare.real_equivalent(plateau, 80.0) == ("=", pytest.approx(math.sqrt(400 * 800)))


def test_real_curve_averages_each_size_and_never_decreases():
    rows = [{"setting": "real", "n_base": 100, "n_real_added": 0, "accuracy": 50},
            {"setting": "real", "n_base": 100, "n_real_added": 0, "accuracy": 60},
            {"setting": "real", "n_base": 100, "n_real_added": 100, "accuracy": 80},
            {"setting": "real", "n_base": 200, "n_real_added": 0, "accuracy": 70},  # same n = 200: averaged with 80
            {"setting": "real", "n_base": 200, "n_real_added": 200, "accuracy": 72},  # below 75: lifted
            {"setting": "closed", "n_base": 100, "n_real_added": 0, "accuracy": 99}]
    assert compare.real_curve(rows) == [(100.0, 55.0), (200.0, 75.0), (400.0, 75.0)]


def test_real_equivalents_map_the_cas_interval_through_the_curve():
    curve = [(100.0, 60.0), (400.0, 80.0)]
    out = compare.real_equivalents(curve, [68.0, 70.0, 72.0])
    assert out["relation"] == "=" and out["n"] == pytest.approx(200.0, abs=0.1)
    lo, hi = (compare.real_equivalent(curve, v)[1] for v in (70 - 4.303 * 2 / math.sqrt(3), 70 + 4.303 * 2 / math.sqrt(3)))
    assert out["ci95"] == [f"{lo:,.0f}", f"{hi:,.0f}"]
    assert compare.real_equivalents(curve, [50.0])["text"] == "< 100"


def pool(labels, accepted=None, seconds=None):
    y = torch.tensor(labels)
    x = torch.arange(len(y), dtype=torch.uint8).view(-1, 1, 1, 1)  # pixel value = pool index
    p = compare.Pool(x, y, seconds)
    p.accepted = None if accepted is None else torch.tensor(accepted)
    return p


def test_pool_draw_is_class_balanced_without_replacement_and_seeded():
    p = pool([0] * 6 + [1] * 6)
    x, y, _ = compare.pool_draw(p, torch.tensor([3, 2]), seed=1, filtered=False)
    index = x.flatten().tolist()
    assert y.tolist() == [0, 0, 0, 1, 1] and len(set(index)) == 5
    assert all(i < 6 for i in index[:3]) and all(i >= 6 for i in index[3:])
    again, _, _ = compare.pool_draw(p, torch.tensor([3, 2]), seed=1, filtered=False)
    assert torch.equal(x, again)
    draws = {tuple(compare.pool_draw(p, torch.tensor([3, 2]), seed=s, filtered=False)[0].flatten().tolist()) for s in range(5)}
    assert len(draws) > 1  # another seed, another draw: recycling from a pool gives new sets


def test_filtered_pool_draw_takes_accepted_images_first_and_counts_the_fill():
    accepted = [True, True, False, False, False, False, True, True, True, True, False, False]
    p = pool([0] * 6 + [1] * 6, accepted)
    x, y, stats = compare.pool_draw(p, torch.tensor([3, 3]), seed=0, filtered=True)
    first = x.flatten().tolist()
    assert set(first[:2]) == {0, 1} and first[2] in {2, 3, 4, 5}  # class 0: both accepted, then one rejected
    assert set(first[3:]) <= {6, 7, 8, 9}  # class 1: four accepted, three taken
    assert stats.accepted == [2, 4] and stats.filled == [1, 0] and stats.drawn == [6, 6]


def test_a_pool_too_small_for_the_set_is_a_user_error():
    with pytest.raises(UserError, match="holds 2 images of class 1"):
        compare.pool_draw(pool([0, 0, 0, 1, 1]), torch.tensor([2, 3]), seed=0, filtered=False)
    assert pool([0, 0, 0, 1, 1]).shortfall(torch.tensor([2, 3])) == [(1, 2, 3)]


class Fixed(torch.nn.Module):
    """A 'classifier' whose softmax is set per image by its pixel value (index into ``probs``)."""

    def __init__(self, probs):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.log(torch.tensor(probs)), requires_grad=False)

    def forward(self, x):
        return self.logits[(x.flatten(1)[:, 0] * 255).round().long()]


def test_judge_applies_gafis_rule_and_the_cost_counts_rejected_images():
    probs = [[0.95, 0.05], [0.6, 0.4], [0.3, 0.7], [0.08, 0.92]]
    p = pool([0, 0, 1, 1], seconds=0.5)
    p.judge(Fixed(probs), threshold=0.9)
    assert p.accepted.tolist() == [True, False, False, True]  # p[c] > 0.9 and argmax = c
    p.filter_seconds = 2.0
    assert p.seconds_per_kept() == pytest.approx(0.5 / 0.5 + 2.0 / 4)
    p.judge(Fixed(probs), threshold=None)
    assert p.accepted.all()


def test_read_pool_takes_the_generation_seconds_the_file_records(tmp_path):
    images = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
    save_synthetic(tmp_path / "with.npz", images, torch.arange(20) % 2, ("a", "b"), seconds=4.0)
    save_synthetic(tmp_path / "without.npz", images, torch.arange(20) % 2, ("a", "b"))
    assert compare.read_pool(tmp_path / "with.npz", 2, "cpu").seconds_per_image == pytest.approx(0.2)
    assert compare.read_pool(tmp_path / "without.npz", 2, "cpu").seconds_per_image is None


def test_comparisons_pair_post_processing_within_and_families_across():
    cas = {"gan": [60.0, 62.0, 61.0], "gan_gafi": [70.0, 71.0, 73.0], "edm": [80.0, 80.0, 81.0],
           "edm_gafi": [80.0, 81.0, 80.0], "txt2img": [50.0, 55.0, 52.0]}
    out = {c["name"]: c for c in compare.comparisons(cas)}
    assert list(out) == ["gan_gafi_vs_gan", "edm_gafi_vs_edm", "edm_vs_gan", "txt2img_vs_gan", "txt2img_vs_edm",
                         "edm_gafi_vs_gan_gafi"]
    assert out["gan_gafi_vs_gan"]["diff_mean"] == pytest.approx(np.mean([10, 9, 12]))
    assert out["gan_gafi_vs_gan"]["verdict"] == "better" and out["txt2img_vs_edm"]["verdict"] == "worse"
    assert out["edm_gafi_vs_edm"]["verdict"] == "no_difference"
    assert all(c["paper"] == "synthgap" for c in out.values())


def test_timed_adds_up_images_of_every_call():
    timed = compare.Timed(lambda seed: (torch.zeros(seed, 1), torch.zeros(seed), None))
    timed(3)
    timed(5)
    assert timed.images == 8 and timed.seconds >= 0 and timed.seconds_per_image() == timed.seconds / 8
