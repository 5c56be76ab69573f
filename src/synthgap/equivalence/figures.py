"""Figures of the equivalence fit: the contour map of Fig. 2, the accuracy curves of Fig. 5/6/8 and the
IR(n_base) of Eq. 7 / Fig. 7."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from synthgap.equivalence.fit import SettingFit, equivalence
from synthgap.plots import save_figure


def contour_grid(fit: SettingFit, n_base: int, points: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(added real / n_base, added synthetic / n_base, fitted accuracy %) on the contour's grid. The fitted
    log surface is unbounded and extrapolates past 100 % far from the measured cells; an accuracy cannot, so
    the values are clipped to [0, 100] (the colour bar says so)."""
    model = fit.models[n_base]
    grid_real, grid_syn = np.meshgrid(np.linspace(0, 3 * n_base, points), np.linspace(0, 5 * n_base, points))
    acc = model(n_base + grid_real.ravel(), grid_syn.ravel()).reshape(grid_real.shape)
    return grid_real / n_base, grid_syn / n_base, np.clip(acc, 0.0, 100.0)


def contour(fit: SettingFit, n_base: int, path: Path, title: str) -> None:
    """Fitted accuracy over (added real, added synthetic) at one base size, with the fitted equivalence curve;
    accuracies are clipped to [0, 100] % (``contour_grid``)."""
    real_ratio, syn_ratio, acc = contour_grid(fit, n_base)
    fig, ax = plt.subplots(figsize=(5.2, 4))
    filled = ax.contourf(real_ratio, syn_ratio, acc, levels=20, cmap="viridis")
    ax.contour(real_ratio, syn_ratio, acc, levels=10, colors="white", linewidths=0.4)
    fig.colorbar(filled, ax=ax, label="fitted accuracy (%, clipped at 100)")
    ratios = np.linspace(0, 3, 100)
    curve = equivalence(n_base, ratios, fit.c1, fit.c2, fit.tau)
    keep = curve <= 5
    ax.plot(ratios[keep], curve[keep], "r-", label="fitted equivalence (Eq. 13)")
    pts = [(r, y) for b, r, y in fit.tuples if b == n_base and y <= 5]
    if pts:
        ax.plot(*zip(*pts), "ro", label="solved tuples")
    ax.set(xlabel="n_real+ / n_base", ylabel="n_syn+ / n_base", title=title)
    ax.legend(fontsize=7, loc="upper left")
    save_figure(fig, path)


def accuracy_curves(frame: pd.DataFrame, fits: dict[str, SettingFit], path: Path, title: str) -> None:
    """Measured accuracy against the amount added (as a multiple of n_base), one panel per base size; error
    bars are 95 % intervals over trials (none with one trial); fitted lines are clipped at 100 %."""
    bases = sorted({b for fit in fits.values() for b in fit.models})
    fig, axes = plt.subplots(1, len(bases), figsize=(4.2 * len(bases), 3.4), squeeze=False)
    for ax, n_base in zip(axes[0], bases):
        real = _means(frame[(frame["setting"] == "real") & (frame["n_base"] == n_base)], "n_real_added")
        ax.errorbar(real.index / n_base, real["mean"], yerr=real["half"], fmt="ko-", capsize=3, label="real")
        for setting, fit in fits.items():
            rows = _means(frame[(frame["setting"] == setting) & (frame["n_base"] == n_base)], "n_syn_added")
            line = ax.errorbar(rows.index / n_base, rows["mean"], yerr=rows["half"], fmt="o", capsize=3, label=setting)[0]
            if n_base in fit.models:
                xs = np.linspace(0, max(rows.index.max(), real.index.max()) / n_base, 100)
                ax.plot(xs, np.clip(fit.models[n_base](n_base, xs * n_base), 0.0, 100.0), "-", color=line.get_color(), alpha=0.6)
        ax.set(xlabel="added / n_base", ylabel="top-1 (%)", title=f"n_base = {n_base:,}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, y=1.03)
    save_figure(fig, path)


def _means(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean accuracy and the half-width of its 95 % interval over trials, per amount added."""
    from synthgap.stats import estimate

    out = {k: estimate(g.sort_values("trial")["accuracy"].tolist() if "trial" in g else g["accuracy"].tolist())
           for k, g in rows.groupby(by)}
    return pd.DataFrame({"mean": [e.mean for e in out.values()], "half": [e.half_width or 0.0 for e in out.values()]},
                        index=pd.Index(list(out), name=by))


def improvement_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    """IR(n_base) = dAcc_closed(1:1) / dAcc_open(1:1) from measured rows (Eq. 7); empty without both."""
    rows = []
    for n_base, cell in frame.groupby("n_base"):
        base = cell[(cell["n_real_added"] == 0) & (cell["n_syn_added"] == 0)]["accuracy"].mean()
        gains = {}
        for setting in ("closed", "open"):
            one = cell[(cell["setting"] == setting) & (cell["n_syn_added"] == n_base)]["accuracy"]
            if len(one) and not np.isnan(base):
                gains[setting] = one.mean() - base
        if len(gains) == 2 and gains["open"] != 0:
            rows.append(dict(zip(IR_COLUMNS, (int(n_base), gains["closed"], gains["open"], gains["closed"] / gains["open"]))))
    return pd.DataFrame(rows, columns=list(IR_COLUMNS))


IR_COLUMNS = ("n_base", "gain_closed", "gain_open", "ir")


def missing(path: Path, title: str, why: str) -> None:
    """A figure that says why there is nothing to draw (a declared output of a run without that setting)."""
    fig, ax = plt.subplots(figsize=(4.6, 1.6))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    save_figure(fig, path)


def ir_plot(ir: pd.DataFrame, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.semilogx(ir["n_base"], ir["ir"], "o-")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set(xlabel="n_base", ylabel="IR = ΔAcc closed / ΔAcc open (1:1)", title=title)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
