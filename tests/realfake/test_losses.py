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
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen) + 1.0
    pooled = np.concatenate([x.numpy(), y.numpy()]).astype(np.float64)
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    median = np.median(d2[~np.eye(8, dtype=bool)])
    k = sum(np.exp(-d2 / (2 * s * s * median)) for s in (0.5, 1.0, 2.0))
    expected = k[:4, :4].mean() + k[4:, 4:].mean() - 2 * k[:4, 4:].mean()
    assert kernel_mmd_loss(x, y).item() == pytest.approx(expected, rel=1e-5)
    assert kernel_mmd_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kernel_mmd_loss(x, y + 3.0).item() > kernel_mmd_loss(x, y).item() > 0
