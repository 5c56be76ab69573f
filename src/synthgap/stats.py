"""Means, 95 % intervals and paired comparisons over trials: what every table cell and verdict is made of.

A cell's value is the mean over its trials with a Student-t 95 % interval (``mean ± t_{0.975, n-1} s / sqrt(n)``).
A comparison of two cells is paired: the per-trial differences ``a_i - b_i`` (both sides trained with the
same trial seeds, :func:`synthgap.seeding.trial_seed`) get the same interval, and the verdict is ``better``
when the interval lies above 0, ``worse`` when it lies below, and ``no_difference`` when it contains 0 (or
when there is one trial, which gives no interval).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # Student t quantile; scipy.stats would add ~1.5 s to every stage's start

@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float | None  # None with a single trial
    hi: float | None
    trials: int

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None else (self.hi - self.lo) / 2

    def as_dict(self) -> dict:
        ci = None if self.lo is None else [round(self.lo, 6), round(self.hi, 6)]
        return {"mean": round(self.mean, 6), "ci95": ci, "trials": self.trials}

    def text(self, digits: int = 1) -> str:
        """``74.0 ± 2.1`` (the half-width of the 95 % interval; just the mean for one trial)."""
        if self.half_width is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def estimate(values: Sequence[float]) -> Estimate:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"need one or more finite values, got {values!r}")
    mean = float(x.mean())
    if len(x) == 1:
        return Estimate(mean, None, None, 1)
    half = float(stdtrit(len(x) - 1, 0.975) * x.std(ddof=1) / math.sqrt(len(x)))
    return Estimate(mean, mean - half, mean + half, len(x))


def verdict(interval: Estimate) -> str:
    if interval.lo is None or interval.lo <= 0 <= interval.hi:
        return "no_difference"
    return "better" if interval.lo > 0 else "worse"


def compare(name: str, paper: str, a: Sequence[float], b: Sequence[float], **extra) -> dict:
    """Paired comparison of ``a`` against ``b``, trials in trial order: ``a - b`` over the trials both cells ran.
    Trial i has the seeds ``trial_seed(seed, i)`` in every cell, so a cell with more trials (a headline cell)
    pairs with one with fewer over the first ``min(len(a), len(b))``; ``trials`` in the result says how many."""
    n = min(len(a), len(b))
    diff = estimate(np.asarray(a[:n], dtype=np.float64) - np.asarray(b[:n], dtype=np.float64))
    return {"name": name, "paper": paper, "diff_mean": round(diff.mean, 6),
            "ci95": diff.as_dict()["ci95"], "trials": diff.trials, "verdict": verdict(diff), **extra}


def of_row(row: dict, key: str) -> Estimate:
    """The estimate of ``key`` in a summarised grid row (from its per-trial values ``<key>_trials``)."""
    return estimate(row[f"{key}_trials"])


def headline(values: Sequence[float]) -> dict:
    """``{"mean": .., "ci95": [lo, hi], "trials": n}`` for reports/summary.json."""
    return estimate(values).as_dict()
