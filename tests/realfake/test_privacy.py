import numpy as np
import pytest
import torch

from synthgap.realfake.privacy import auc, keep_mask, leave_one_out, logit_confidence, nearest_real, tpr_at_fpr


def test_keep_mask_puts_each_image_in_half_the_experiments():
    keep = keep_mask(10, 300, seed=0)
    assert keep.shape == (10, 300) and (keep.sum(0) == 5).all()
    np.testing.assert_array_equal(keep, keep_mask(10, 300, seed=0))


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
