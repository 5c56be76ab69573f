"""Synthetic-data quality: FID / IS with Inception-v3, and the same ideas in a classifier's feature space.

- FID (2048-d pool features) and IS (10 splits) with torchmetrics over torch-fidelity's Inception-v3, from a
  local weights file (``inception_scores``; no download),
- Fréchet distance between Gaussian fits of real and synthetic features (FID's formula, other features),
- diversity: the per-class standard deviation of features, averaged over dimensions and classes (the
  Equivalence paper's diversity score),
- domain accuracy: 5-fold cross-validated accuracy of a logistic regression that tells real from synthetic
  features (50 % = indistinguishable; the paper reports > 98 % on CIFAR-10 with a ResNet-110).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from synthgap.errors import UserError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's name for the TF-ported weights


@torch.no_grad()
def extract_features(classifier, x_uint8: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Penultimate features of uint8 (N, C, H, W) images."""
    classifier.eval()
    device = next(classifier.parameters()).device
    out = [classifier.features(x_uint8[i : i + batch_size].to(device).float().div_(255.0)).float().cpu()
           for i in range(0, len(x_uint8), batch_size)]
    return torch.cat(out).numpy().astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))  # 2-d for one feature too
    covmean = linalg.sqrtm(cov_a @ cov_b).real  # no ``disp``: deprecated in SciPy 1.16, removed in 1.18
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def diversity(features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean([features[labels == c].std(0).mean() for c in np.unique(labels) if (labels == c).sum() > 1]))


def domain_accuracy(real: np.ndarray, synthetic: np.ndarray, seed: int = 0) -> float:
    """Cross-validated accuracy (%) of telling real from synthetic features, on balanced classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n = min(len(real), len(synthetic))
    rng = np.random.default_rng(seed)
    x = np.concatenate([real[rng.permutation(len(real))[:n]], synthetic[rng.permutation(len(synthetic))[:n]]])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(100 * cross_val_score(model, x, y, cv=5).mean())


def check_inception_weights(path) -> None:
    """Refuse anything but a plain state dict of tensors (torch-fidelity itself loads it with weights_only=False,
    so it is opened here first with weights_only=True: a file that passes holds no code)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Inception weights {path} not found",
                        f"download {INCEPTION_FILE} (torch-fidelity's release) to that path, or set "
                        "equivalence.quality.inception_weights: null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt file or pickled code: one message either way
        raise UserError(f"{path} is not a loadable weights file ({type(err).__name__})",
                        f"replace it with torch-fidelity's {INCEPTION_FILE}") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise UserError(f"{path} is not torch-fidelity's Inception-v3 state dict",
                        f"replace it with {INCEPTION_FILE}")


@torch.no_grad()
def inception_scores(real_uint8: torch.Tensor, synthetic_uint8: torch.Tensor, weights, device,
                     batch_size: int = 100, splits: int = 10, seed: int = 0) -> dict[str, float]:
    """FID between two uint8 (N, C, H, W) sets and the Inception Score of each (grey images repeat to RGB;
    torchmetrics resizes to 299 px as torch-fidelity does). ``seed`` fixes IS's shuffle into splits."""
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.inception import InceptionScore

    check_inception_weights(weights)
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights)).to(device)
    logits = NoTrainInceptionV3("inception-v3-compat", ["logits_unbiased"], str(weights))
    scores = {"real": InceptionScore(feature=logits, splits=splits).to(device),
              "synthetic": InceptionScore(feature=logits, splits=splits).to(device)}
    for name, images in (("real", real_uint8), ("synthetic", synthetic_uint8)):
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
            fid.update(batch, real=name == "real")
            scores[name].update(batch)
    out = {"fid": float(fid.compute())}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, metric in scores.items():
            mean, std = metric.compute()
            out[f"inception_score_{name}"], out[f"inception_score_{name}_std"] = float(mean), float(std)
    return out
