"""Classification Accuracy Score: train a classifier on synthetic data only, test it on real data.

A synthetic set is drawn from K generators, each with its own (checkpoint, stddev, threshold) and its own
seed stream, each contributing quota // K images per class (:func:`synthetic_set`); the CAS loop trains on
it through the shared classifier loop, regenerating it every ``recycle`` epochs (:class:`RecycledSet`).

Selection follows ``select_on``: ``val`` scores a configuration by the final validation accuracy and reports
the final test accuracy (the clean protocol, default); ``test`` reproduces the original code, which scores
and reports the best test accuracy over epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synthgap.config import ClassifierConfig
from synthgap.gafi.filtering import FilterStats, filtered_sample
from synthgap.gafi.recycle import RecycledSet
from synthgap.gafi.sampling import balanced_counts, split_quota
from synthgap.models import build_classifier, spec_for_data
from synthgap.models.biggan import Generator
from synthgap.seeding import derive_seed
from synthgap.train.classifier import TrainResult, train_classifier


@dataclass(frozen=True)
class GeneratorChoice:
    """One generator as the search configured it; ``threshold=None`` disables filtering."""

    generator: Generator
    stddev: float = 1.0
    threshold: float | None = None


def synthetic_set(
    choices: list[GeneratorChoice],
    classifier: torch.nn.Module | None,
    quota: torch.Tensor,
    seed: int,
    *,
    max_rounds: int,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, FilterStats]:
    xs, ys, stats = [], [], FilterStats()
    for k, (choice, part) in enumerate(zip(choices, split_quota(quota, len(choices)))):
        x, y, part_stats = filtered_sample(
            choice.generator, classifier, part, choice.stddev, choice.threshold,
            base_seed=seed, key=("generator", k), max_rounds=max_rounds, batch_size=batch_size,
        )
        xs.append(x)
        ys.append(y)
        stats = stats.merge(part_stats)
    return torch.cat(xs), torch.cat(ys), stats


@dataclass
class CasResult:
    train: TrainResult
    filter_stats: dict
    score: float  # what the search maximises
    cas: float  # the reported CAS (test top-1, percent)


def run_cas(
    choices: list[GeneratorChoice],
    filter_classifier: torch.nn.Module | None,
    cfg: ClassifierConfig,
    *,
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    synthetic_size: int,
    recycle: int | None,
    select_on: str,
    seed: int,
    device: torch.device,
    max_rounds: int = 10,
    batch_size: int = 1024,
    desc: str = "cas",
) -> CasResult:
    quota = balanced_counts(synthetic_size, num_classes)
    source = RecycledSet(
        lambda s: synthetic_set(choices, filter_classifier, quota, s, max_rounds=max_rounds, batch_size=batch_size),
        recycle,
        seed,
    )
    first_x, _ = source(0)
    images = as_numpy_images(first_x)  # the classifier normalises with synthetic statistics only
    torch.manual_seed(derive_seed(seed, "cas", "init"))
    model = build_classifier(spec_for_data(cfg.model, images, num_classes, "synthetic"))
    result = train_classifier(model, source, cfg.train, seed=seed, device=device, evals=evals,
                              eval_every_epoch=select_on == "test", desc=desc)
    if select_on == "test":
        best = max(r["test_top1"] for r in result.history)
        score = cas = best
    else:
        score, cas = result.final["val_top1"], result.final["test_top1"]
    return CasResult(result, source.stats(), float(score), float(cas))


def as_numpy_images(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).cpu().numpy()
