import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from synthgap.realfake.privacy import (
    auc,
    keep_mask,
    leave_one_out,
    lira_scores,
    logit_confidence,
    nearest_real,
    roc,
    tpr_at_fpr,
)


def test_keep_mask_puts_each_image_in_half_the_experiments():
    keep = keep_mask(10, 300, seed=0)
    assert keep.shape == (10, 300) and (keep.sum(0) == 5).all()
    np.testing.assert_array_equal(keep, keep_mask(10, 300, seed=0))


def test_keep_mask_is_the_released_codes_draw_and_leaves_the_global_rng_alone():
    state = np.random.get_state()
    try:  # the released split_half_data, verbatim
        np.random.seed(0)
        num = 10
        keep = np.random.uniform(0, 1, size=(num, 123))
        order = keep.argsort(0)
        released = order < int(0.5 * num)
    finally:
        np.random.set_state(state)
    np.random.seed(5)
    before = np.random.uniform()
    np.random.seed(5)
    np.testing.assert_array_equal(keep_mask(10, 123, seed=0), released)
    assert np.random.uniform() == before  # the global stream is not reseeded


def test_logit_confidence_is_log_odds_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = torch.softmax(logits, 1)
    phi = logit_confidence(logits, torch.tensor([0, 2]))
    expected = [np.log(p[0, 0] / (1 - p[0, 0])), np.log(p[1, 2] / (1 - p[1, 2]))]
    np.testing.assert_allclose(phi, expected, rtol=1e-6)


def overfit_phi(keep: np.ndarray, features: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Each experiment memorises its members (random labels: only memorisation fits them)."""
    phi = np.zeros(keep.shape)
    for k, members in enumerate(keep):
        torch.manual_seed(k)
        net = torch.nn.Sequential(torch.nn.Linear(features.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 2))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        idx = torch.from_numpy(np.flatnonzero(members))
        for _ in range(100):
            loss = torch.nn.functional.cross_entropy(net(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            phi[k] = logit_confidence(net(features), labels)
    return phi


def test_lira_separates_members_of_an_overfit_model_and_not_of_a_blind_one():
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(200, 30, generator=gen), torch.randint(0, 2, (200,), generator=gen)
    keep = keep_mask(16, 200, seed=0)
    attacks = leave_one_out(overfit_phi(keep, features, labels), keep)
    assert set(attacks) == {"online", "offline", "fixed_variance"}
    for scores, members in attacks.values():
        assert auc(scores, members) > 0.85
    assert tpr_at_fpr(*attacks["fixed_variance"], 0.01) > 0.1  # the low-FPR regime LiRA is about
    blind = np.random.default_rng(0).normal(size=keep.shape)  # statistics that ignore membership
    scores, members = leave_one_out(blind, keep)["online"]
    assert 0.4 < auc(scores, members) < 0.6


def test_tpr_at_fpr_and_nearest_real():
    scores, members = np.array([5.0, 4.0, 3.0, 2.0, 1.0]), np.array([True, True, False, True, False])
    assert tpr_at_fpr(scores, members, 0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, members, 0.5) == pytest.approx(1.0)
    assert auc(scores, members) == pytest.approx(5 / 6)  # member-above-non-member pairs: 2 + 2 + 1 of 6
    real = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    sims, idx = nearest_real(real[[7, 3]] * 2.0, real, top=2)  # scaled copies: cosine similarity 1
    assert idx[:, 0].tolist() == [7, 3] and torch.allclose(sims[:, 0], torch.ones(2))


def test_few_shadows_do_not_leak_membership_through_the_fit():
    """With 4 experiments an image has 1 or 2 IN shadows among the other 3 depending on the target's
    membership; statistics that ignore membership must still score at chance."""
    keep = keep_mask(4, 4000, seed=0)
    blind = np.random.default_rng(1).normal(size=keep.shape)
    for scores, members in leave_one_out(blind, keep).values():
        assert 0.45 < auc(scores, members) < 0.55
        assert tpr_at_fpr(scores, members, 0.01) < 0.03


@pytest.mark.parametrize("flip", [False, True])
def test_tied_scores_count_one_half_whatever_the_input_order(flip):
    members = np.array([True, False])[:: -1 if flip else 1]
    assert auc(np.array([1.0, 1.0]), members) == 0.5  # one member, one non-member, one threshold
    # pairs (member, non-member): (3, 2) 1, (3, 1) 1, (2, 2) 1/2, (2, 1) 1 -> 3.5 / 4
    scores, members = np.array([3.0, 2.0, 2.0, 1.0]), np.array([True, True, False, False])
    order = [0, 2, 1, 3] if flip else [0, 1, 2, 3]
    assert auc(scores[order], members[order]) == pytest.approx(0.875)
    # thresholds >= 3: (fpr 0, tpr 1/2); >= 2: (1/2, 1); >= 1: (1, 1). The tied member cannot be had at fpr 0
    fpr, tpr = roc(scores[order], members[order])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    assert tpr_at_fpr(scores[order], members[order], 0.0) == 0.5
    assert tpr_at_fpr(scores[order], members[order], 0.49) == 0.5 and tpr_at_fpr(scores[order], members[order], 0.5) == 1.0


def test_auc_and_roc_match_scikit_learn_on_heavily_tied_scores(monkeypatch):
    monkeypatch.delattr(np, "trapezoid", raising=False)  # numpy 1.26 (allowed by pyproject) has no np.trapezoid
    rng = np.random.default_rng(0)
    for levels in (2, 5, 40):
        scores = rng.integers(0, levels, 400).astype(float)
        members = rng.random(400) < 0.5 + 0.05 * scores / levels  # weakly informative, many ties
        expected_fpr, expected_tpr, _ = roc_curve(members, scores, drop_intermediate=False)
        fpr, tpr = roc(scores, members)
        np.testing.assert_allclose(fpr, expected_fpr)
        np.testing.assert_allclose(tpr, expected_tpr)
        assert auc(scores, members) == pytest.approx(roc_auc_score(members, scores), abs=1e-12)
        for limit in (0.0, 0.01, 0.1, 0.5):
            assert tpr_at_fpr(scores, members, limit) == pytest.approx(expected_tpr[expected_fpr <= limit].max())
        perm = rng.permutation(400)  # the order of the input does not matter
        assert auc(scores[perm], members[perm]) == pytest.approx(auc(scores, members), abs=1e-12)
        assert tpr_at_fpr(scores[perm], members[perm], 0.1) == tpr_at_fpr(scores, members, 0.1)


def test_lira_scores_are_per_image_gaussian_likelihood_ratios():
    """Three images, four shadows, each image IN for two of them. Image 0 has high confidence everywhere and
    the target's 9.5 is its OUT mean plus 0.5; image 1 has low confidence and the target's 1.5 is above its IN
    mean: a threshold on the confidence would call image 0 the member, the likelihood ratio calls image 1."""
    keep = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=bool)
    shadow = np.array([[10.0, 0.0, 4.5], [12.0, -2.0, 4.0], [8.0, 2.0, 5.5], [10.0, 0.0, 8.0]])
    # IN: image 0 {10, 12} -> N(11, 1), image 1 {0, 2} -> N(1, 1), image 2 {4, 8} -> N(6, 2)
    # OUT: image 0 {8, 10} -> N(9, 1), image 1 {-2, 0} -> N(-1, 1), image 2 {4.5, 5.5} -> N(5, 0.5)
    target = np.array([9.5, 1.5, 6.0])
    out = lira_scores(target, shadow, keep)
    # log N(x; m_in, s_in) - log N(x; m_out, s_out) = ln(s_out / s_in) - (x - m_in)^2 / 2 s_in^2 + (x - m_out)^2 / 2 s_out^2
    online = [-1.5**2 / 2 + 0.5**2 / 2, -0.5**2 / 2 + 2.5**2 / 2, np.log(0.5 / 2) - 0 + 1.0**2 / (2 * 0.25)]
    np.testing.assert_allclose(out["online"], online, rtol=1e-9)  # -1, 3, 2 - 2 ln 2
    assert out["online"][1] > out["online"][0] and target[0] > target[1]
    np.testing.assert_allclose(out["offline"], -np.log(stats.norm.sf([0.5, 2.5, 2.0])), rtol=1e-9)  # z-scores vs OUT
    # fixed variance: one pooled IN sd and one pooled OUT sd (population sd, as np.std and the released code)
    sd_in = np.std([10, 12, 0, 2, 4, 8]) + 1e-6
    sd_out = np.std([8, 10, -2, 0, 4.5, 5.5]) + 1e-6
    fixed = stats.norm.logpdf(target, [11, 1, 6], sd_in) - stats.norm.logpdf(target, [9, -1, 5], sd_out)
    np.testing.assert_allclose(out["fixed_variance"], fixed, rtol=1e-9)


def test_auc_interval_resamples_images_with_all_their_blocks():
    from synthgap.realfake.privacy import auc, auc_interval

    rng = np.random.default_rng(0)
    members = np.tile(rng.random(200) < 0.5, 4)  # 4 targets x 200 images, pooled as leave_one_out pools them
    separated = np.where(members, 1.0, 0.0) + 0.01 * rng.random(800)
    assert auc_interval(separated, members, 200) == (1.0, 1.0)  # every resample is perfectly separated
    noise = rng.normal(size=800)
    low, high = auc_interval(noise, members, 200)
    assert low < auc(noise, members) < high and low < 0.5 < high and high - low < 0.15
    leaky = noise + 0.8 * members
    low, high = auc_interval(leaky, members, 200)
    assert 0.5 < low < auc(leaky, members) < high
    # one image's blocks move together: four copies of the same 200 scores are no more certain than one
    one = auc_interval(noise[:200], members[:200], 200)
    copies = auc_interval(np.tile(noise[:200], 4), np.tile(members[:200], 4), 200)
    assert np.allclose(one, copies)
