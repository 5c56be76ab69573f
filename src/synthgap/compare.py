"""The synthgap table: every generator family's synthetic data under one protocol (stage compare_generators).

Each source makes class-balanced CAS training sets of the same size; the CAS classifier, its recipe and the
trial seeds are the same for all, so two sources are compared trial by trial (:func:`synthgap.stats.compare`).

- ``gan``: GaFi's Baseline (the first generator's last checkpoint, stddev 1, no filtering, one set);
  ``gan_gafi``: GaFi as cas_final ran it (searched checkpoint, Expansion Trick, Dynamic Sample Filtering,
  Dynamic Dataset Recycle), generated on the fly (:func:`synthgap.gafi.cas.synthetic_set`).
- pool sources (the EDM closed-set pool, the Real-Fake stand-in's txt2img / img2img sets): a fixed,
  pre-generated :class:`Pool`. Plain: one class-balanced random draw. With GaFi's post-processing
  (:func:`pool_draw` with ``filtered``): GaFi's filter rule (:func:`synthgap.gafi.filtering.keep_mask`) on
  every pool image, a draw from the accepted images of each class (classes with too few accepted images are
  filled with rejected ones, as GaFi's bounded fallback fills, and counted), redrawn every N epochs: recycling
  from a larger pre-generated pool, where GaFi regenerates.

:func:`real_equivalent` reads a source's CAS on a real-data learning curve (accuracy against real training
images): the number of real images that would train a classifier to the same accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from synthgap.errors import UserError
from synthgap.gafi.filtering import FilterStats, filter_probs, keep_mask
from synthgap.seeding import torch_generator
from synthgap.stats import compare, estimate

FAMILIES = ("gan", "edm", "txt2img", "img2img")
FAMILY_NAMES = {"gan": "GAN (GaFi's BigGAN-deep)", "edm": "diffusion (EDM, closed-set)",
                "txt2img": "text-to-image (Real-Fake stand-in)", "img2img": "text-to-image, img2img (Real-Fake stand-in)"}


def family(source: str) -> str:
    return source.removesuffix("_gafi")


def post_processed(source: str) -> bool:
    return source.endswith("_gafi")


# ------------------------------------------------------------------------------------------------ pools
@dataclass
class Pool:
    """A pre-generated labelled set: uint8 (N, C, H, W) images and labels on one device, the wall seconds
    per image its generation took (None: not recorded), and after :meth:`judge` the filter rule's verdict."""

    x: torch.Tensor
    y: torch.Tensor
    seconds_per_image: float | None = None
    accepted: torch.Tensor | None = None  # bool (N,)
    filter_seconds: float = 0.0
    threshold: float | None = None

    def judge(self, classifier: torch.nn.Module, threshold: float | None, batch_size: int = 1024) -> None:
        """Apply GaFi's filter rule (``p[c] > threshold`` and ``argmax = c``) to every image, timed; ``None``: accept all."""
        start = time.perf_counter()
        if threshold is None:
            self.accepted = torch.ones(len(self.y), dtype=torch.bool, device=self.y.device)
        else:
            self.accepted = keep_mask(filter_probs(classifier, self.x, batch_size), self.y, threshold)
        self.filter_seconds, self.threshold = time.perf_counter() - start, threshold

    def shortfall(self, quota: torch.Tensor) -> list[tuple[int, int, int]]:
        """(class, images in the pool, images needed) for every class the pool cannot fill."""
        have = torch.bincount(self.y.cpu(), minlength=len(quota))
        return [(c, int(have[c]), int(quota[c])) for c in range(len(quota)) if have[c] < quota[c]]

    def seconds_per_kept(self) -> float | None:
        """Generation (per accepted image) plus filtering seconds per image of a training set."""
        if self.seconds_per_image is None:
            return None
        rate = float(self.accepted.float().mean()) if self.accepted is not None else 1.0
        return self.seconds_per_image / max(rate, 1.0 / len(self.y)) + self.filter_seconds / len(self.y)


def read_pool(path, num_classes: int, device) -> Pool:
    """A pool saved by ``save_synthetic`` (sample_diffusion, synthesize_realfake), with its generation cost when
    the file records it (``seconds``: the wall seconds the whole file took)."""
    from synthgap.data.formats import read_npz
    from synthgap.equivalence.grid import load_pool
    from synthgap.train.classifier import to_device_tensors

    x, y = to_device_tensors(*load_pool(path, "npz", num_classes), device)
    seconds = read_npz(path, (), ("seconds",)).get("seconds")
    return Pool(x, y, None if seconds is None else float(seconds) / max(len(y), 1))


def pool_draw(pool: Pool, quota: torch.Tensor, seed: int, filtered: bool) -> tuple[torch.Tensor, torch.Tensor, FilterStats]:
    """``quota[c]`` images of each class c drawn at random (seeded by ``seed``) from the pool, without
    replacement; ``filtered``: accepted images first, rejected ones fill what the accepted cannot."""
    generator = torch_generator(seed)
    ys = pool.y.cpu()
    accepted = pool.accepted.cpu() if filtered else torch.ones(len(ys), dtype=torch.bool)
    picks, stats = [], FilterStats(rounds=1)
    for c, need in enumerate(int(q) for q in quota):
        members = torch.nonzero(ys == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        good, bad = members[accepted[members]], members[~accepted[members]]
        if len(members) < need:
            raise UserError(f"the pool holds {len(members)} images of class {c}, a set needs {need}",
                            "generate a larger pool or lower compare_generators.images")
        picks.append(torch.cat([good, bad])[:need])
        stats.drawn.append(len(members))
        stats.accepted.append(len(good))
        stats.filled.append(max(0, need - len(good)))
    index = torch.cat(picks).to(pool.y.device)
    return pool.x[index], pool.y[index], stats


class Timed:
    """Wraps a set maker and adds up the wall seconds and images of its calls (a source's generation cost)."""

    def __init__(self, make: Callable):
        self.make, self.seconds, self.images = make, 0.0, 0

    def __call__(self, seed: int):
        start = time.perf_counter()
        x, y, stats = self.make(seed)
        self.seconds += time.perf_counter() - start
        self.images += len(y)
        return x, y, stats

    def seconds_per_image(self) -> float | None:
        return self.seconds / self.images if self.images else None


# ------------------------------------------------------------------------------------ real-image equivalent
def real_curve(rows: Sequence[dict]) -> list[tuple[float, float]]:
    """The real-data learning curve from the Equivalence grid's real cells (augment's cells, or rows, with
    ``setting``, ``n_base``, ``n_real_added`` and the mean ``accuracy``): mean accuracy per training-set size
    n = n_base + n_real_added, in increasing n, made non-decreasing (a running maximum: more real data is never
    credited with less accuracy)."""
    by_n: dict[int, list[float]] = {}
    for row in rows:
        if row["setting"] == "real":
            by_n.setdefault(int(row["n_base"]) + int(row["n_real_added"]), []).append(float(row["accuracy"]))
    curve, best = [], -math.inf
    for n in sorted(by_n):
        best = max(best, float(np.mean(by_n[n])))
        curve.append((float(n), best))
    return curve


def real_equivalent(curve: Sequence[tuple[float, float]], accuracy: float) -> tuple[str, float]:
    """(relation, n): the smallest n at which the curve reaches ``accuracy``, interpolated linearly in log n
    between measured sizes (``"="``); ``"<"`` with the smallest size when even that is more accurate, ``">"``
    with the largest when no measured size reaches it."""
    if not curve:
        raise ValueError("the real-data curve is empty")
    (n0, a0), (n_last, a_last) = curve[0], curve[-1]
    if accuracy < a0:
        return "<", n0
    if accuracy > a_last:
        return ">", n_last
    if accuracy == a0:
        return "=", n0
    for (n_lo, a_lo), (n_hi, a_hi) in zip(curve, curve[1:]):
        if a_lo < accuracy <= a_hi:
            t = (accuracy - a_lo) / (a_hi - a_lo)
            return "=", float(math.exp(math.log(n_lo) + t * (math.log(n_hi) - math.log(n_lo))))
    raise AssertionError("unreachable on a non-decreasing curve")


def equivalent_text(relation: str, n: float) -> str:
    return f"{relation} {n:,.0f}" if relation != "=" else f"{n:,.0f}"


def real_equivalents(curve, cas_trials: Sequence[float]) -> dict:
    """The real-image equivalent of a source's mean CAS, and of its 95 % interval's ends (the curve is
    monotone, so the interval maps to an interval of n)."""
    est = estimate(cas_trials)
    out = {"relation": None, "n": None, "ci95": None, "text": ""}
    relation, n = real_equivalent(curve, est.mean)
    out |= {"relation": relation, "n": round(n, 1), "text": equivalent_text(relation, n)}
    if est.lo is not None:
        ends = [real_equivalent(curve, v) for v in (est.lo, est.hi)]
        out["ci95"] = [equivalent_text(*end) for end in ends]
        out["text"] += f" [{out['ci95'][0]}, {out['ci95'][1]}]"
    return out


# ------------------------------------------------------------------------------------------ comparisons
def comparisons(cas: dict[str, Sequence[float]]) -> list[dict]:
    """Paired comparisons of the sources present (``cas``: per-trial CAS by source, the same trial seeds):
    each family with GaFi's post-processing against the same family without it, then the families against each
    other at equal image count, plain against plain and post-processed against post-processed."""
    out = []
    for fam in FAMILIES:
        if fam in cas and f"{fam}_gafi" in cas:
            out.append(compare(f"{fam}_gafi_vs_{fam}", "synthgap", cas[f"{fam}_gafi"], cas[fam]))
    for suffix in ("", "_gafi"):
        present = [f for f in FAMILIES if f + suffix in cas]
        for i, a in enumerate(present):
            for b in present[:i]:
                out.append(compare(f"{a}{suffix}_vs_{b}{suffix}", "synthgap", cas[a + suffix], cas[b + suffix]))
    return out


# ---------------------------------------------------------------------------------------- table and figure
def table_rows(rows: dict[str, dict], real_trials: Sequence[float]) -> list[dict]:
    """One table row per source from its summary (``rows[source]``: ``cas_trials``, ``post_processing``,
    ``equivalent``, ``quality``, ``seconds_per_1000``, ``filled``): CAS and its paired gap to Real Data with
    95 % intervals and the gap's verdict."""
    out = []
    for source, row in rows.items():
        gap = compare(f"{source}_vs_real", "synthgap", row["cas_trials"], real_trials)
        ci = "" if gap["ci95"] is None else f" [{gap['ci95'][0]:+.2f}, {gap['ci95'][1]:+.2f}]"
        quality, cost = row["quality"], row["seconds_per_1000"]
        out.append({
            "source": source, "family": FAMILY_NAMES[family(source)], "post-processing": row["post_processing"],
            "CAS (%)": estimate(row["cas_trials"]).text(2), "gap to Real (points)": f"{gap['diff_mean']:+.2f}{ci}",
            "vs Real": gap["verdict"], "real-image equivalent": row["equivalent"]["text"],
            "Fréchet distance": round(quality["frechet_distance"], 3), "diversity": round(quality["diversity"], 3),
            "domain accuracy (%)": round(quality["domain_accuracy"], 1), "filled (%)": round(row["filled"], 1),
            "s / 1,000 images": None if cost is None else round(cost, 3),
        })
    return out


def cost_figure(rows: dict[str, dict], real_trials: Sequence[float], path, dataset: str) -> None:
    """CAS (mean, 95 % interval) against generation seconds per 1,000 images (log scale), one marker per source
    (filled: with GaFi's post-processing), Real Data as a band."""
    from synthgap.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = dict(zip(FAMILIES, ("tab:red", "tab:blue", "tab:green", "tab:purple")))
    real = estimate(real_trials)
    ax.axhline(real.mean, color="black", lw=1, label=f"Real Data {real.text(1)}")
    if real.lo is not None:
        ax.axhspan(real.lo, real.hi, color="black", alpha=0.08)
    for source, row in rows.items():
        if row["seconds_per_1000"] is None:
            continue
        est = estimate(row["cas_trials"])
        err = None if est.lo is None else [[max(0.0, est.mean - est.lo)], [max(0.0, est.hi - est.mean)]]
        gafi = post_processed(source)
        ax.errorbar([row["seconds_per_1000"]], [est.mean], yerr=err, fmt="o" if gafi else "s", capsize=3,
                    color=colours[family(source)], mfc=colours[family(source)] if gafi else "white", label=source)
    ax.set_xscale("log")
    ax.set(xlabel="generation seconds per 1,000 images (this machine, log scale)", ylabel="CAS: top-1 on real test (%)",
           title=f"synthgap: CAS against generation cost ({dataset})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
