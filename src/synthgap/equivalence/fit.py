"""The equivalence fitter of the Equivalence paper (appendix A).

Input: a table of classifier accuracies with columns ``setting, n_base, n_real_added, n_syn_added, accuracy``
(percent; an optional ``trial`` column is averaged). Rows with ``setting == "real"`` are the real-augmentation
results and are shared by every synthetic setting (``closed``, ``open``, ...).

For each synthetic setting and each base size that has real-augmentation rows:

1. regress accuracy on features of ``n_real = n_base + n_real_added`` and ``n_syn = n_syn_added`` (plus an
   intercept), using the real rows and the setting's rows of that base. ``paper`` features are
   ``log(n_real + eps), log(n_syn + eps), log(n_real + n_syn + eps)`` (Eq. 11); ``best`` tries all 31
   non-empty subsets of ``H = {n_real, n_syn, log(n_real + eps), log(n_syn + eps), log(n_real + n_syn + eps)}``
   and keeps the one with the smallest leave-one-out RMSE summed over the base sizes (all are reported);
2. solve ``Acc(n_base + r n_base, 0) = Acc(n_base, n_syn+)`` for ``n_syn+`` at each ratio ``r`` (the first
   crossing on ``[0, max_ratio * n_base]``), dropping unsolvable tuples and those with
   ``n_syn+ / n_base > max_ratio`` (100, as in the paper);
3. fit ``n_syn+ / n_base = c1^(tau n_base) (c2^r - 1)`` by least squares on ``n_syn+ / n_base``, with
   ``tau = 10 / n_total`` held fixed (c1 and tau are not separately identifiable: tau is a unit).

With two or more trials per cell, percentile bootstrap intervals for c1 and c2 resample the trials of every
cell. ``eps`` defaults to 1e-3: on the paper's BloodMNIST tables it gives c1 = 0.722, c2 = 3.896 against the
published 0.72, 3.88 (1e-6 gives 0.728, 3.841; 1.0 gives 0.702, 4.096).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq, curve_fit

from synthgap.errors import UserError

FEATURES = ("n_real", "n_syn", "log_real", "log_syn", "log_total")
PAPER_FEATURES = ("log_real", "log_syn", "log_total")
REQUIRED = ("setting", "n_base", "n_real_added", "n_syn_added", "accuracy")


def design(n_real: np.ndarray, n_syn: np.ndarray, features: tuple[str, ...], eps: float) -> np.ndarray:
    """Feature columns (in ``features`` order) plus a final intercept column."""
    columns = {
        "n_real": lambda: n_real,
        "n_syn": lambda: n_syn,
        "log_real": lambda: np.log(n_real + eps),
        "log_syn": lambda: np.log(n_syn + eps),
        "log_total": lambda: np.log(n_real + n_syn + eps),
    }
    return np.column_stack([columns[f]() for f in features] + [np.ones_like(n_real, dtype=float)])


@dataclass(frozen=True)
class AccuracyModel:
    features: tuple[str, ...]
    coefficients: np.ndarray  # one per feature, then the intercept
    eps: float
    r2: float

    def __call__(self, n_real, n_syn) -> np.ndarray:
        n_real = np.atleast_1d(np.asarray(n_real, dtype=float))
        n_syn = np.atleast_1d(np.asarray(n_syn, dtype=float))
        n_real, n_syn = np.broadcast_arrays(n_real, n_syn)
        return design(n_real, n_syn, self.features, self.eps) @ self.coefficients


def fit_accuracy(points: pd.DataFrame, features: tuple[str, ...], eps: float) -> AccuracyModel:
    """Least squares of ``accuracy`` on the features of ``n_real`` and ``n_syn`` (columns of ``points``)."""
    x = design(points["n_real"].to_numpy(float), points["n_syn"].to_numpy(float), features, eps)
    y = points["accuracy"].to_numpy(float)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    total = ((y - y.mean()) ** 2).sum()
    return AccuracyModel(features, coef, eps, float(1 - (residual**2).sum() / total) if total > 0 else 1.0)


def loo_rmse(points: pd.DataFrame, features: tuple[str, ...], eps: float) -> float:
    """Leave-one-out RMSE of the regression (inf when there are too few points)."""
    if len(points) <= len(features) + 2:
        return math.inf
    errors = []
    for i in range(len(points)):
        rest = points.drop(points.index[i])
        model = fit_accuracy(rest, features, eps)
        row = points.iloc[i]
        errors.append(float(model(row["n_real"], row["n_syn"])[0] - row["accuracy"]))
    return float(np.sqrt(np.mean(np.square(errors))))


def solve_equivalent(model: AccuracyModel, n_base: float, n_real_added: float, max_ratio: float = 100.0) -> float | None:
    """The smallest ``n_syn+`` with ``Acc(n_base, n_syn+) = Acc(n_base + n_real_added, 0)``, or None."""
    target = float(model(n_base + n_real_added, 0.0)[0])
    hi = max_ratio * n_base
    grid = np.concatenate([[0.0], np.geomspace(1e-3 * n_base, hi, 400)])
    gap = model(n_base, grid) - target
    if gap[0] >= 0:
        return 0.0 if n_real_added == 0 else None  # synthetic data never has to beat this; nothing to solve
    crossing = np.flatnonzero((gap[:-1] < 0) & (gap[1:] >= 0))
    if len(crossing) == 0:
        return None  # not reachable within max_ratio * n_base
    i = int(crossing[0])
    return float(brentq(lambda s: float(model(n_base, s)[0]) - target, grid[i], grid[i + 1]))


def equivalence(n_base, ratio, c1, c2, tau):
    """``n_syn+ / n_base`` of Eq. 13 for arrays of base sizes and ratios ``n_real+ / n_base``."""
    return np.power(c1, tau * np.asarray(n_base, float)) * (np.power(c2, np.asarray(ratio, float)) - 1.0)


def fit_constants(tuples: np.ndarray, tau: float) -> tuple[float, float, float]:
    """(c1, c2, R^2) of Eq. 13 from rows ``(n_base, ratio, n_syn_over_n_base)``."""
    if len(tuples) < 2:
        raise UserError(f"only {len(tuples)} solvable equivalence tuple(s)", "add results at more ratios or base sizes")
    nb, r, y = tuples[:, 0], tuples[:, 1], tuples[:, 2]
    (c1, c2), _ = curve_fit(
        lambda x, a, b: equivalence(x[0], x[1], a, b, tau), (nb, r), y, p0=(1.0, 2.0),
        bounds=((1e-6, 1.0 + 1e-9), (1e6, 1e6)), maxfev=20000,
    )
    residual = y - equivalence(nb, r, c1, c2, tau)
    total = ((y - y.mean()) ** 2).sum()
    return float(c1), float(c2), float(1 - (residual**2).sum() / total) if total > 0 else 1.0


# ----------------------------------------------------------------------------------------------- tables
def load_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a results table and average repeated trials per cell."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise UserError(f"results table lacks the columns {missing}", f"provide {', '.join(REQUIRED)} (trial optional)")
    frame = frame.copy()
    for column in REQUIRED[1:]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    bad = frame[list(REQUIRED[1:])].isna().any(axis=1) | (frame[list(REQUIRED[1:4])] < 0).any(axis=1)
    if bad.any():
        raise UserError(f"results row {int(np.flatnonzero(bad)[0]) + 2} has a missing or negative number",
                        "every n_* must be >= 0 and accuracy a number")
    if "real" not in set(frame["setting"]):
        raise UserError("results have no rows with setting == real", "include the real-augmentation results")
    return frame


def cell_points(frame: pd.DataFrame, setting: str, n_base: int) -> pd.DataFrame:
    """Mean accuracy per distinct (n_real, n_syn) of the real rows and one setting's rows at ``n_base``."""
    rows = frame[(frame["n_base"] == n_base) & frame["setting"].isin(["real", setting])]
    rows = rows.assign(n_real=rows["n_base"] + rows["n_real_added"], n_syn=rows["n_syn_added"])
    return rows.groupby(["n_real", "n_syn"], as_index=False)["accuracy"].mean()


def base_sizes(frame: pd.DataFrame, setting: str) -> list[int]:
    """Base sizes with real additions and with this setting's additions (both directions identified)."""
    real = set(frame[(frame["setting"] == "real") & (frame["n_real_added"] > 0)]["n_base"])
    syn = set(frame[(frame["setting"] == setting) & (frame["n_syn_added"] > 0)]["n_base"])
    return sorted(int(b) for b in real & syn)


@dataclass
class SettingFit:
    setting: str
    c1: float
    c2: float
    tau: float
    r2: float
    features: tuple[str, ...]
    models: dict[int, AccuracyModel]
    tuples: list[tuple[float, float, float]]
    c1_ci: tuple[float, float] | None = None
    c2_ci: tuple[float, float] | None = None
    selection: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        out = {
            "c1": self.c1, "c2": self.c2, "tau": self.tau, "r2": self.r2, "features": list(self.features),
            "coefficients": {str(b): m.coefficients.tolist() for b, m in self.models.items()},
            "accuracy_r2": {str(b): m.r2 for b, m in self.models.items()},
            "tuples": [list(t) for t in self.tuples],
        }
        if self.c1_ci is not None:
            out |= {"c1_ci95": list(self.c1_ci), "c2_ci95": list(self.c2_ci)}
        if self.selection:
            out["feature_selection"] = self.selection
        return out


def equivalence_tuples(models: dict[int, AccuracyModel], ratios: tuple[float, ...], max_ratio: float) -> list[tuple[float, float, float]]:
    tuples = []
    for n_base, model in models.items():
        for ratio in ratios:
            n_syn = solve_equivalent(model, n_base, ratio * n_base, max_ratio)
            if n_syn is not None and 0 < n_syn / n_base <= max_ratio:
                tuples.append((float(n_base), float(ratio), n_syn / n_base))
    return tuples


def select_features(frame: pd.DataFrame, setting: str, bases: list[int], eps: float) -> tuple[tuple[str, ...], list[dict]]:
    """All 31 subsets of H ranked by leave-one-out RMSE summed over the base sizes."""
    ranking = []
    for k in range(1, len(FEATURES) + 1):
        for subset in itertools.combinations(FEATURES, k):
            score = sum(loo_rmse(cell_points(frame, setting, b), subset, eps) for b in bases)
            r2 = [fit_accuracy(cell_points(frame, setting, b), subset, eps).r2 for b in bases]
            ranking.append({"features": list(subset), "loo_rmse": score, "mean_r2": float(np.mean(r2))})
    ranking.sort(key=lambda row: (row["loo_rmse"], len(row["features"])))
    finite = [row for row in ranking if math.isfinite(row["loo_rmse"])]
    if not finite:
        raise UserError(f"{setting}: too few results per base size to compare feature sets", "use --features paper")
    return tuple(finite[0]["features"]), ranking


def fit_setting(
    frame: pd.DataFrame,
    setting: str,
    n_total: int,
    ratios: tuple[float, ...] = (1.0, 2.0, 3.0),
    features: str = "paper",
    eps: float = 1e-3,
    max_ratio: float = 100.0,
    bootstrap: int = 200,
    seed: int = 0,
) -> SettingFit:
    bases = base_sizes(frame, setting)
    if not bases:
        raise UserError(f"setting '{setting}' shares no base size with the real-augmentation rows",
                        "add real and synthetic additions at the same n_base")
    selection: list[dict] = []
    chosen = PAPER_FEATURES
    if features == "best":
        chosen, selection = select_features(frame, setting, bases, eps)
    models = {b: fit_accuracy(cell_points(frame, setting, b), chosen, eps) for b in bases}
    tuples = equivalence_tuples(models, ratios, max_ratio)
    tau = 10.0 / n_total
    c1, c2, r2 = fit_constants(np.asarray(tuples, float), tau)
    result = SettingFit(setting, c1, c2, tau, r2, chosen, models, tuples, selection=selection)
    if "trial" in frame.columns and frame.groupby(["setting", "n_base", "n_real_added", "n_syn_added"]).size().min() >= 2:
        result.c1_ci, result.c2_ci = bootstrap_intervals(frame, setting, bases, chosen, ratios, tau, eps, max_ratio, bootstrap, seed)
    return result


def bootstrap_intervals(frame, setting, bases, features, ratios, tau, eps, max_ratio, rounds, seed):
    """95 % percentile intervals of c1, c2 when each cell's trials are resampled with replacement."""
    rng = np.random.default_rng(seed)
    cells = [g for _, g in frame[frame["setting"].isin(["real", setting])].groupby(["setting", "n_base", "n_real_added", "n_syn_added"])]
    # A resampled table differs from ``rows`` only in its accuracies, so which point of which base each row
    # averages into (:func:`cell_points`) is found once; a round is then one draw per cell and a bincount.
    rows = pd.concat(cells)
    points = {}
    for b in bases:
        at = (rows["n_base"] == b).to_numpy()
        pairs = np.column_stack([rows["n_base"].to_numpy(float)[at] + rows["n_real_added"].to_numpy(float)[at],
                                 rows["n_syn_added"].to_numpy(float)[at]])
        distinct, index = np.unique(pairs, axis=0, return_inverse=True)  # sorted as groupby sorts
        points[b] = (at, index.ravel(), np.bincount(index.ravel()), distinct)
    accuracies = [g["accuracy"].to_numpy(float) for g in cells]
    draws = []
    for _ in range(rounds):
        sample = np.concatenate([a[rng.integers(0, len(a), len(a))] for a in accuracies])
        models = {}
        for b, (at, index, counts, distinct) in points.items():
            mean = np.bincount(index, weights=sample[at], minlength=len(counts)) / counts
            models[b] = fit_accuracy(pd.DataFrame({"n_real": distinct[:, 0], "n_syn": distinct[:, 1], "accuracy": mean}),
                                     features, eps)
        tuples = equivalence_tuples(models, ratios, max_ratio)
        if len(tuples) >= 2:
            try:
                draws.append(fit_constants(np.asarray(tuples, float), tau)[:2])
            except (RuntimeError, UserError):
                continue
    if len(draws) < max(10, rounds // 4):
        return None, None
    draws = np.asarray(draws)
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def fit_all(frame: pd.DataFrame, n_total: int, **kwargs) -> dict[str, SettingFit]:
    frame = load_results(frame)
    settings = sorted(s for s in set(frame["setting"]) if s != "real")
    if not settings:
        raise UserError("results have only real-augmentation rows", "add rows of a synthetic setting (closed, open, ...)")
    return {s: fit_setting(frame, s, n_total, **kwargs) for s in settings}


def formula(fit: SettingFit) -> str:
    """The fitted equivalence written as in the paper (Eq. 2-9)."""
    unit = 1.0 / fit.tau
    unit_text = f"{unit:,.0f}" if abs(unit - round(unit)) < 1e-9 else f"{unit:,.2f}"
    return (f"n_syn+ / n_base ≃ {fit.c1:.2f}^(n_base / {unit_text}) × ({fit.c2:.2f}^(n_real+ / n_base) − 1)")
