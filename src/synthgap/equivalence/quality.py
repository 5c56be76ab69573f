"""Synthetic-data quality: FID / IS with Inception-v3, and the same ideas in a classifier's feature space.

- FID (2048-d pool features) and IS (10 splits) with torchmetrics over torch-fidelity's Inception-v3, from a
  local weights file (``inception_scores``; no download),
- Fréchet distance between Gaussian fits of real and synthetic features (FID's formula, other features),
- diversity: the per-class standard deviation of features, averaged over dimensions and classes (the
  Equivalence paper's diversity score),
- domain accuracy: 5-fold cross-validated accuracy of a logistic regression that tells real from synthetic
  features (50 % = indistinguishable; the paper reports > 98 % on CIFAR-10 with a ResNet-110),
- KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic kernel ``(x.y / d + 1)^3``, mean and std over
  random subsets (torch-fidelity's 100 subsets of 1,000),
- :func:`generator_quality`: FID / IS / KID on Inception-v3, or without its weights in a classifier's space
  (penultimate features, softmax for IS).
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


def pool_sample(x: np.ndarray, y: np.ndarray, images: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The images of a pool its metrics are computed on (``equivalence.quality.images``): all of them when
    ``images`` is None or not smaller than the pool, else a random subset of ``images`` drawn with ``seed``,
    in pool order."""
    if images is None or images >= len(y):
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(y), images, replace=False))
    return x[keep], y[keep]


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


def image_domain_accuracy(real_uint8: torch.Tensor, synthetic_uint8: torch.Tensor, model_cfg, train_cfg, *,
                          seed: int, device, dataset: str = "") -> float:
    """The Equivalence paper's domain classifier (appendix F): a classifier trained on images to tell real (0)
    from synthetic (1), on balanced halves of each set, and its test accuracy (%) on the other halves; 50 %:
    the two sets cannot be told apart."""
    from synthgap.models import build_classifier, spec_for_data
    from synthgap.seeding import derive_seed
    from synthgap.metrics import evaluate
    from synthgap.train.classifier import to_device_tensors, train_classifier

    n = min(len(real_uint8), len(synthetic_uint8))
    if n < 4:
        raise ValueError(f"a domain classifier needs at least 4 images per set, got {n}")
    rng = np.random.default_rng(derive_seed(seed, "domain"))
    picks = [rng.permutation(len(real_uint8))[:n], rng.permutation(len(synthetic_uint8))[:n]]
    half = n // 2
    x = {split: np.concatenate([s[i[sl]].permute(0, 2, 3, 1).numpy() for s, i in zip((real_uint8, synthetic_uint8), picks)])
         for split, sl in (("train", slice(0, half)), ("test", slice(half, n)))}
    y = {"train": np.repeat([0, 1], half), "test": np.repeat([0, 1], n - half)}
    torch.manual_seed(derive_seed(seed, "domain", "init"))
    model = build_classifier(spec_for_data(model_cfg, x["train"], 2, dataset))
    train_classifier(model, to_device_tensors(x["train"], y["train"], device), train_cfg, seed=seed, device=device,
                     eval_every_epoch=False, desc="domain classifier")
    test = to_device_tensors(x["test"], y["test"], device)
    return float(evaluate(model, *test, batch_size=train_cfg.eval_batch_size, precision=train_cfg.precision)["top1"])


def mmd2_unbiased(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 between feature sets (rows) with the kernel k(x, y) = (x.y / d + 1)^3."""
    kernel = lambda x, y: (x @ y.T / a.shape[1] + 1.0) ** 3  # noqa: E731
    kaa, kbb, m, n = kernel(a, a), kernel(b, b), len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kernel(a, b).mean())


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID: mean and std of :func:`mmd2_unbiased` over ``subsets`` pairs of random subsets (without replacement,
    ``min(subset_size, len(a), len(b))`` rows of each)."""
    rng, size = np.random.default_rng(seed), min(subset_size, len(a), len(b))
    if size == len(a) == len(b):  # every subset is the whole set
        return mmd2_unbiased(a, b), 0.0
    values = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def inception_score_of(probs: np.ndarray, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) of class probabilities (rows), mean and std over ``splits`` random splits."""
    probs = probs[np.random.default_rng(seed).permutation(len(probs))]
    scores = [np.exp((p * (np.log(p + 1e-12) - np.log(p.mean(0) + 1e-12))).sum(1).mean())
              for p in np.array_split(probs, splits)]
    return float(np.mean(scores)), float(np.std(scores))


def generator_quality(real_uint8: torch.Tensor, synthetic_uint8: torch.Tensor, classifier, *, weights=None,
                      device="cpu", batch_size: int = 100, seed: int = 0) -> dict:
    """FID, IS (of the synthetic set) and KID between two uint8 (N, C, H, W) sets: on Inception-v3 with
    ``weights``; else in ``classifier``'s space (penultimate features, softmax for IS), where the numbers rank
    generators but are not comparable with published ones. ``features`` names the space."""
    if weights:
        s = inception_scores(real_uint8, synthetic_uint8, weights, device, batch_size=batch_size, seed=seed)
        return {"features": "inception-v3", "fid": s["fid"], "is": s["inception_score_synthetic"],
                "is_std": s["inception_score_synthetic_std"], "kid": s["kid"], "kid_std": s["kid_std"]}
    from synthgap.metrics import predict_logits

    real, synthetic = extract_features(classifier, real_uint8), extract_features(classifier, synthetic_uint8)
    probs = torch.softmax(predict_logits(classifier, synthetic_uint8, precision="fp32"), 1).double().cpu().numpy()
    is_mean, is_std = inception_score_of(probs, seed=seed)
    kid, kid_std = kernel_distance(real, synthetic, seed=seed)
    return {"features": "classifier", "fid": frechet_distance(real, synthetic), "is": is_mean, "is_std": is_std,
            "kid": kid, "kid_std": kid_std}


def check_inception_weights(path, key: str = "equivalence.quality.inception_weights") -> None:
    """Refuse anything but a plain state dict of tensors (torch-fidelity itself loads it with weights_only=False,
    so it is opened here first with weights_only=True: a file that passes holds no code)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Inception weights {path} not found",
                        f"download {INCEPTION_FILE} (torch-fidelity's release) to that path, or set {key}: null")
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
                     batch_size: int = 100, splits: int = 10, seed: int = 0,
                     labels: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """FID (:func:`frechet_distance`) and KID (:func:`kernel_distance`) of the 2048-d pool features between two uint8 (N, C, H, W) sets and the
    Inception Score of each (grey images repeat to RGB; torchmetrics resizes to 299 px as torch-fidelity does).
    ``seed`` fixes IS's shuffle into splits and KID's subsets. With ``labels`` (of the real and the synthetic
    images) also ``diversity_real`` and ``diversity_synthetic`` (:func:`diversity`) of those same features."""
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.inception import InceptionScore

    check_inception_weights(weights)
    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(weights)).to(device)
    logits = NoTrainInceptionV3("inception-v3-compat", ["logits_unbiased"], str(weights))
    scores = {"real": InceptionScore(feature=logits, splits=splits).to(device),
              "synthetic": InceptionScore(feature=logits, splits=splits).to(device)}
    features = {"real": [], "synthetic": []}
    for name, images in (("real", real_uint8), ("synthetic", synthetic_uint8)):
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].to(device)
            batch = batch.expand(-1, 3, -1, -1) if batch.shape[1] == 1 else batch
            features[name].append(fid.inception(batch).double().cpu())  # one forward serves FID and KID
            scores[name].update(batch)
    real, synthetic = (torch.cat(f).numpy() for f in features.values())
    kid, kid_std = kernel_distance(real, synthetic, seed=seed)
    out = {"fid": frechet_distance(real, synthetic), "kid": kid, "kid_std": kid_std}
    if labels is not None:
        out |= {"diversity_real": diversity(real, labels[0]), "diversity_synthetic": diversity(synthetic, labels[1])}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, metric in scores.items():
            mean, std = metric.compute()
            out[f"inception_score_{name}"], out[f"inception_score_{name}_std"] = float(mean), float(std)
    return out
