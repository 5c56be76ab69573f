"""Figures of the Real-Fake reports: the scaling curve (Fig. 2), LiRA ROC curves (Fig. 3), copy detection (Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from synthgap.plots import save_figure  # noqa: E402


def scaling_figure(cfg, accuracy: dict[str, dict], path: Path) -> None:
    """Top-1 against the synthetic set's size (error bars: 95 % intervals over trials), real data as a band."""
    from synthgap.realfake.pipeline import scale_set
    from synthgap.stats import estimate

    scales = list(cfg.scales)
    ests = [estimate(accuracy[scale_set(k)]["top1_trials"]) for k in scales]
    real = estimate(accuracy["real"]["top1_trials"])
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    err = None if ests[0].lo is None else [[e.mean - e.lo for e in ests], [e.hi - e.mean for e in ests]]
    ax.errorbar(scales, [e.mean for e in ests], yerr=err, fmt="o-", capsize=3, label="synthetic only")
    ax.axhline(real.mean, color="tab:red", ls="--", label="real data")
    if real.lo is not None:
        ax.axhspan(real.lo, real.hi, color="tab:red", alpha=0.15)
    ax.set_xlabel("synthetic set size (x real)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("Effect of scaling up the synthetic set", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def roc_figure(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> None:
    """``curves[arm][attack] = (fpr, tpr)``, log-log as in LiRA."""
    attacks = sorted({a for arm in curves.values() for a in arm})
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.4 * len(attacks), 3.2), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        for arm, by_attack in curves.items():
            fpr, tpr = by_attack[attack]
            ax.plot(np.maximum(fpr, 1e-5), np.maximum(tpr, 1e-5), label=arm)
        ax.plot([1e-5, 1], [1e-5, 1], color="grey", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FPR")
        ax.set_ylabel("TPR")
        ax.set_title(f"LiRA {attack.replace('_', ' ')}", fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def matches_figure(queries: np.ndarray, matches: np.ndarray, sims: np.ndarray, path: Path) -> None:
    """Rows: a synthetic query (NHWC uint8) then its most similar real images with their similarity."""
    rows, top = matches.shape[:2]
    fig, axes = plt.subplots(rows, top + 1, figsize=(1.3 * (top + 1), 1.4 * rows), squeeze=False)
    grey = queries.shape[-1] == 1
    for r in range(rows):
        panels = [(queries[r], "synthetic")] + [(matches[r, j], f"{sims[r, j]:.3f}") for j in range(top)]
        for ax, (img, label) in zip(axes[r], panels):
            ax.imshow(img.squeeze(-1) if grey else img, cmap="gray" if grey else None, interpolation="nearest")
            ax.set_title(label, fontsize=7)
            ax.set_axis_off()
    save_figure(fig, path)


# Table 2 pairs that differ in one component: (variant, the variant without that component, the component)
ABLATION_PAIRS = (("plain", "base", "finetune"), ("guidance", "plain", "visual_guidance"),
                  ("matching", "plain", "distribution_matching"), ("full", "matching", "visual_guidance"),
                  ("full", "guidance", "distribution_matching"), ("full", "base", "whole_method"))


def comparisons(cfg, acc: dict[str, dict]) -> list[dict]:
    """The paper's comparisons as paired differences over trials (top-1 points): Table 1 against real data;
    each Table 2 variant against the variant without one of its components (and the whole method against no
    finetuning), per synthesis mode; img2img (latent prior) against text-to-image; Table 3 scales against x1;
    Table 1 against real data on each out-of-distribution set (``realfake.ood``); and how much more of each
    finetuned variant's text-to-image set the real-data classifier recognises than of the base model's (the
    domain gap, ``reference_top1``)."""
    from synthgap.realfake.pipeline import ablation_order, scale_set
    from synthgap.stats import compare

    def trials(name: str) -> list[float]:
        return acc[name]["top1_trials"]

    out = [compare("realfake_synthetic_vs_real", "realfake", trials("full_img2img"), trials("real")),
           compare("realfake_real_plus_synthetic_vs_real", "realfake", trials("real_plus_full_img2img"), trials("real"))]
    order = ablation_order(cfg)
    for mode in ("txt2img", "img2img"):
        out += [compare(f"realfake_{a}_vs_{b}_{mode}", "realfake", trials(f"{a}_{mode}"), trials(f"{b}_{mode}"), component=what)
                for a, b, what in ABLATION_PAIRS if a in order and b in order]
    out += [compare(f"realfake_{v}_img2img_vs_txt2img", "realfake", trials(f"{v}_img2img"), trials(f"{v}_txt2img"),
                    component="latent_prior") for v in order]
    if "base" in order and "reference_top1_trials" in acc.get("base_txt2img", {}):  # the domain gap LoRA closes
        out += [compare(f"realfake_{v}_vs_base_txt2img_recognised", "realfake", acc[f"{v}_txt2img"]["reference_top1_trials"],
                        acc["base_txt2img"]["reference_top1_trials"], measure="reference_top1") for v in order if v != "base"]
    out += [compare(f"realfake_scale_x{k}_vs_x1", "realfake", trials(scale_set(k)), trials("full_img2img"))
            for k in cfg.scales if k > 1]
    for ood in cfg.ood:  # section 4.4: does synthetic data change accuracy out of distribution?
        key = f"ood_{ood.name}_top1_trials"
        out += [compare(f"realfake_{a}_vs_real_ood_{ood.name}", "realfake", acc[b][key], acc["real"][key])
                for a, b in (("synthetic", "full_img2img"), ("real_plus_synthetic", "real_plus_full_img2img"))]
    return out
