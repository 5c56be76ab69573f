import numpy as np
import pytest
import torch

from synthgap.realfake.losses import diffusion_loss, kernel_mmd_loss, mean_match_loss, min_snr_weights


def test_min_snr_weights_clip_high_snr_only():
    abar = torch.tensor([0.5, 0.9, 0.99])  # snr 1, 9, 99
    w = min_snr_weights(abar, torch.tensor([0, 1, 2]), gamma=5.0)
    torch.testing.assert_close(w, torch.tensor([1.0, 5 / 9, 5 / 99]))


def test_mean_match_by_hand():
    pred = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    target = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    w = torch.tensor([0.5, 1.0])
    # weighted sums: pred 0.5*[1,2] + [3,-1] = [3.5, 0]; target 0.5*[0,1] + [1,1] = [1, 1.5]
    expected = ((3.5 - 1.0) ** 2 + (0.0 - 1.5) ** 2) / 2
    assert mean_match_loss(pred, target, w).item() == pytest.approx(expected)
    assert mean_match_loss(pred, pred.clone(), w).item() == 0.0
    assert diffusion_loss(pred, target, w).item() == pytest.approx((0.5 * (1 + 1) / 2 + 1.0 * (4 + 4) / 2) / 2)


def test_kernel_mmd_by_hand():
    """Biased MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y) with k = sum over s in (0.5, 1, 2) of
    exp(-d^2 / (2 s^2 m)), m the median squared distance between distinct pooled points: for one point a
    against one point b, m = |a - b|^2, so k(a, b) = e^-2 + e^-1/2 + e^-1/8 whatever a and b, and
    k(a, a) = 3: MMD^2 = 3 + 3 - 2 (0.1353353 + 0.6065307 + 0.8824969) = 2.7512743."""
    gen = torch.Generator().manual_seed(0)
    for shape in [(1, 3), (1, 2, 2, 2)]:  # (B, D) and images (B, C, H, W), flattened
        a, b = torch.randn(shape, generator=gen), 5 * torch.randn(shape, generator=gen)
        assert kernel_mmd_loss(a, b).item() == pytest.approx(2.7512743, rel=1e-6)
    # x = {0, 1}, y = {1, 2} on a line: squared distances between distinct pooled points 1, 1, 4, 0, 1, 1
    # (each twice), median 1, so k(d^2) = e^-2d^2 + e^-d^2/2 + e^-d^2/8 =: g(d^2). Within x and within y the
    # mean is (3 + g(1)) / 2; across, (g(1) + g(4) + 3 + g(1)) / 4, so MMD^2 = 3 + g(1) - (2 g(1) + g(4) + 3) / 2
    # = 3/2 - g(4)/2 = 1.5 - (e^-8 + e^-2 + e^-1/2) / 2 = 1.1288993.
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    assert kernel_mmd_loss(x, y).item() == pytest.approx(1.1288993, rel=1e-6)
    assert kernel_mmd_loss(7 * x - 3, 7 * y - 3).item() == pytest.approx(1.1288993, rel=1e-6)  # the bandwidth scales with the data
    x, y = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen) + 1.0
    assert kernel_mmd_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kernel_mmd_loss(x, y + 3.0).item() > kernel_mmd_loss(x, y).item() > 0
