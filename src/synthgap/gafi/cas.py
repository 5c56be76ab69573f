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
from synthgap.train.classifier import TrainResult


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


def cas_source(
    choices: list[GeneratorChoice],
    filter_classifier: torch.nn.Module | None,
    *,
    num_classes: int,
    synthetic_size: int,
    recycle: int | None,
    seed: int,
    max_rounds: int = 10,
    batch_size: int = 1024,
) -> RecycledSet:
    """The synthetic training set of one CAS run, regenerated every ``recycle`` epochs from ``seed``."""
    quota = balanced_counts(synthetic_size, num_classes)
    return RecycledSet(
        lambda s: synthetic_set(choices, filter_classifier, quota, s, max_rounds=max_rounds, batch_size=batch_size),
        recycle,
        seed,
    )


def cas_model(cfg: ClassifierConfig, source: RecycledSet, num_classes: int, seed: int) -> torch.nn.Module:
    """A fresh CAS classifier, normalised with the statistics of the first synthetic set (never real data)."""
    first_x, _ = source(0)
    torch.manual_seed(derive_seed(seed, "cas", "init"))
    return build_classifier(spec_for_data(cfg.model, as_numpy_images(first_x), num_classes, "synthetic"))


def cas_scores(result: TrainResult, select_on: str) -> tuple[float, float]:
    """(score the search maximises, reported CAS), test top-1 in percent.

    ``val``: the final validation accuracy scores, the final test accuracy is reported; ``test`` (the original
    code): the best test accuracy over epochs is both."""
    if select_on == "test":
        best = max(r["test_top1"] for r in result.history)
        return float(best), float(best)
    return float(result.final["val_top1"]), float(result.final["test_top1"])


def as_numpy_images(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).cpu().numpy()
