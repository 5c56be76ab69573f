"""Privacy of a synthetic training set: LiRA membership inference and nearest-neighbour copy detection.

LiRA (Carlini et al. 2022). The private set of N images is split by a keep mask (``keep_mask``: shadow k trains
on the images with ``keep[k]``; each image is IN for half of the shadows, the released code's
``uniform(size=(K, N)).argsort(0) < K/2`` with seed 0). For a model f and image (x, y) the statistic is the
logit-scaled confidence ``phi = log p_y - log(1 - p_y)`` (computed stably from the logits). Each shadow in
turn plays the target; the others give, per image, Gaussian fits to phi of the IN and OUT models:

- online:         log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)
- offline:        -log of the OUT Gaussian's upper tail (one-sided; no IN models needed)
- fixed variance: the online test with one global IN and one global OUT variance

Scores are higher for members; ``roc``, ``auc`` and ``tpr_at_fpr`` summarise them. Copy detection: cosine
similarity of L2-normalised features between each synthetic image and every real training image.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats


def keep_mask(num_shadows: int, n: int, seed: int = 0) -> np.ndarray:
    """(K, N) booleans; each column has exactly K // 2 True (pkeep 0.5). The released code's draw
    (``split_half_data`` in finetune/train_text_to_image_lora.py: ``np.random.seed(0)``, ``np.random.uniform(0, 1,
    size=(10, N)).argsort(0) < int(0.5 * 10)``), from a private legacy ``RandomState`` (the same stream, no global
    state touched): with seed 0 and K = 10, shadow k trains on the released code's ``exp_id`` k half."""
    rng = np.random.RandomState(seed)
    return rng.uniform(0, 1, size=(num_shadows, n)).argsort(0) < int(0.5 * num_shadows)


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """``log p_y - log(1 - p_y)`` = ``z_y - logsumexp(z_{j != y})``."""
    logits = logits.double()
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf")).logsumexp(1)
    return (true - others).cpu().numpy()


def lira_scores(target_phi: np.ndarray, shadow_phi: np.ndarray, shadow_keep: np.ndarray,
                use: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Online, offline and fixed-variance scores of one target model's ``target_phi`` (N,) from the shadows'
    (K, N) statistics and keep masks (``use``: which shadow statistics enter the fits; all by default).

    Per-image variances are used only when every image has at least two IN and two OUT shadows; otherwise
    all images use the global variance of their side (one choice for all images)."""
    use = np.ones_like(shadow_keep) if use is None else use

    def fit(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        mask = mask & use
        values = np.where(mask, shadow_phi, np.nan)
        count = mask.sum(0)
        global_mu, global_sd = float(np.nanmean(values)), float(np.nanstd(values)) + 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mu = np.where(count >= 1, np.nanmean(values, 0), global_mu)
            sd = np.maximum(np.nanstd(values, 0), 1e-3 * global_sd) if count.min() >= 2 else np.full(len(count), global_sd)
        return mu, sd, global_sd

    mu_in, sd_in, global_in = fit(shadow_keep)
    mu_out, sd_out, global_out = fit(~shadow_keep)
    return {
        "online": stats.norm.logpdf(target_phi, mu_in, sd_in) - stats.norm.logpdf(target_phi, mu_out, sd_out),
        "offline": -stats.norm.logsf(target_phi, mu_out, sd_out),
        "fixed_variance": stats.norm.logpdf(target_phi, mu_in, global_in) - stats.norm.logpdf(target_phi, mu_out, global_out),
    }


def balanced_shadows(keep: np.ndarray) -> np.ndarray:
    """Which of these shadows to use per image so that each image has as many IN as OUT shadows.

    With exact-half keep masks the other K - 1 experiments hold an image K/2 - 1 times if the target holds it
    and K/2 times if not: fits from unequal counts have unequal noise, which biases the leave-one-out scores
    by membership (strongly with few shadows). Dropping the first shadow of the larger side removes that."""
    use = np.ones_like(keep)
    n_in, n_out = keep.sum(0), (~keep).sum(0)
    for i in np.flatnonzero(n_in != n_out):
        side = keep[:, i] if n_in[i] > n_out[i] else ~keep[:, i]
        surplus = abs(int(n_in[i]) - int(n_out[i]))
        use[np.flatnonzero(side)[:surplus], i] = False
    return use


def leave_one_out(phi: np.ndarray, keep: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every shadow as the target against the others (balanced per image): pooled (scores, is_member)."""
    pooled: dict[str, list] = {}
    for k in range(len(phi)):
        others = np.arange(len(phi)) != k
        use = balanced_shadows(keep[others])
        for name, score in lira_scores(phi[k], phi[others], keep[others], use).items():
            pooled.setdefault(name, []).append((score, keep[k]))
    return {name: (np.concatenate([s for s, _ in parts]), np.concatenate([m for _, m in parts]))
            for name, parts in pooled.items()}


def roc(scores: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1), members scored high. Tied scores share
    one threshold, so the curve does not depend on the order of the input."""
    scores, members = np.asarray(scores, dtype=float), np.asarray(members, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], members[order].astype(float)
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], len(ranked) > 0))  # where each run of equal scores ends
    tp, fp = np.cumsum(hits)[last], np.cumsum(1 - hits)[last]
    tpr = np.concatenate([[0.0], tp / max(hits.sum(), 1)])
    fpr = np.concatenate([[0.0], fp / max((1 - hits).sum(), 1)])
    return fpr, tpr


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fpr_limit: float) -> float:
    """Largest TPR with FPR <= ``fpr_limit`` over the distinct thresholds (with few non-members the smallest
    reachable nonzero FPR is 1/#non-members)."""
    fpr, tpr = roc(scores, members)
    return float(tpr[fpr <= fpr_limit].max())


def auc(scores: np.ndarray, members: np.ndarray) -> float:
    """Area under the ROC curve = Mann-Whitney U / (#members #non-members), ties counted one half
    (average ranks); NaN without members or without non-members."""
    scores, members = np.asarray(scores, dtype=float), np.asarray(members, dtype=bool)
    n_in, n_out = int(members.sum()), int((~members).sum())
    if n_in == 0 or n_out == 0:
        return float("nan")
    u = stats.rankdata(scores)[members].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))


def auc_interval(scores: np.ndarray, members: np.ndarray, n_images: int, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of :func:`auc` for scores pooled as blocks of ``n_images`` (one block per
    target, as :func:`leave_one_out` pools them): images are resampled with replacement, each with all of its
    blocks' scores, since one image's scores across targets are not independent."""
    scores, members = np.asarray(scores, dtype=float), np.asarray(members, dtype=bool)
    blocks = len(scores) // n_images
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, n_images, n_images)
        index = (np.arange(blocks)[:, None] * n_images + pick[None, :]).ravel()
        values.append(auc(scores[index], members[index]))
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def nearest_real(synthetic: torch.Tensor, real: torch.Tensor, top: int = 5, batch_size: int = 1024):
    """For each synthetic feature, the ``top`` most similar real features: (similarities, indices), both
    (N_syn, top), by cosine similarity of L2-normalised features."""
    real_n = torch.nn.functional.normalize(real.float(), dim=1)
    sims, idx = [], []
    for i in range(0, len(synthetic), batch_size):
        s = torch.nn.functional.normalize(synthetic[i : i + batch_size].float(), dim=1) @ real_n.T
        v, j = s.topk(min(top, len(real_n)), dim=1)
        sims.append(v)
        idx.append(j)
    return torch.cat(sims), torch.cat(idx)
