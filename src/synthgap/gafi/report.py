"""GaFi's tables and figures in the paper's layout, built from the stages' JSON outputs.

Rows are the datasets run (one per pipeline run); values are CAS in percent (test top-1 of the classifier
trained on synthetic data only). Table 4 holds Real Data (train_reference), Baseline (cas_baseline) and
GaFi for each number of generators (cas_final for K = 1, cas_multi for K > 1).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from synthgap.plots import save_figure


def table1(dataset: str, baseline: dict, filtering: list[dict]) -> list[dict]:
    row = {"Dataset": dataset, "No Filtering": baseline["cas"]}
    row.update({f"{r['threshold']:.1f}": r["cas"] for r in filtering})
    return [row]


def table2(dataset: str, baseline: dict, recycle: list[dict]) -> list[dict]:
    row = {"Dataset": dataset, "No Recycle": baseline["cas"]}
    row.update({f"N={r['recycle']}": r["cas"] for r in recycle})
    return [row]


def table3(dataset: str, final: dict) -> list[dict]:
    return [{"Dataset": dataset, "Checkpoint": final["checkpoint"], "Standard Deviation": final["stddev"],
             "Filtering Threshold": final["threshold"], "CAS": final["cas"]}]


def table4(dataset: str, real: float, baseline: dict, final: dict, multi: list[dict]) -> list[dict]:
    rows = [{"Method": "Real Data", "#Generators": "", dataset: real},
            {"Method": "Baseline", "#Generators": "", dataset: baseline["cas"]},
            {"Method": "GaFi", "#Generators": 1, dataset: final["cas"]}]
    rows += [{"Method": "GaFi", "#Generators": r["num_generators"], dataset: r["cas"]} for r in multi]
    return rows


def figure2(rows: list[dict], path: Path, dataset: str) -> list[dict]:
    """CAS against noise stddev, unfiltered and filtered (threshold 0.0); returns the plotted points."""
    points = [{"stddev": r["stddev"], "filtered": r["threshold"] != "none", "cas": r["cas"]} for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for filtered, style in ((False, "o--"), (True, "s-")):
        pts = sorted((p["stddev"], p["cas"]) for p in points if p["filtered"] == filtered)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label="filtered (t = 0.0)" if filtered else "unfiltered")
    ax.set(xlabel="noise stddev (Expansion Trick)", ylabel="CAS (%)", title=f"Figure 2: {dataset}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return points


def figure3(per_seed: dict[int, list[dict]], path: Path, dataset: str) -> list[dict]:
    """CAS against generator checkpoint for each generator; returns the plotted points."""
    points = []
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for seed, rows in sorted(per_seed.items()):
        pts = sorted((r["checkpoint"], r["cas"]) for r in rows)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"generator seed {seed}")
        points += [{"generator_seed": seed, "checkpoint": e, "cas": c} for e, c in pts]
    ax.set(xlabel="generator checkpoint (epoch)", ylabel="CAS (%)", title=f"Figure 3: {dataset}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    return points
