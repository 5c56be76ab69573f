"""Stage summarize_results: the headline numbers and verdicts of all three papers in one place.

Merges the ``summary.json`` that each paper's report stage writes (``report_gafi``, ``fit_equivalence``,
``evaluate_realfake``) and the synthgap table's (``compare_generators``) into ``--summary``
(``reports/summary.json``)::

    {"headline": {"real_top1": {"mean": .., "ci95": [lo, hi], "trials": n}, ...},
     "comparisons": [{"name": "gafi_vs_baseline", "paper": "gafi", "diff_mean": .., "ci95": [lo, hi],
                      "trials": n, "verdict": "better"}, ...]}

``--markdown`` (``reports/summary.md``), the same as tables with a sentence per verdict (the README's results come from it),
and ``--headline`` (``reports/headline.json``), the one file ``dvc.yaml`` declares as metrics: the headline means under short
names and the verdict counts, so ``dvc metrics show`` and ``dvc exp show --only-changed`` fit a terminal
(intervals, trials and every comparison stay in ``summary.json``; per-stage detail in ``reports/metrics/``).
"""

from __future__ import annotations

from synthgap.config import load_stage_params
from synthgap.errors import run_main
from synthgap.paths import atomic_write_json, atomic_write_text, read_upstream_json, workspace_root
from synthgap.stats import Estimate
from synthgap.tracking import StageRun
from stages.common import stage_paths

STAGE = "summarize_results"
# the part each paper's report stage writes (``--<paper>`` on the command line) -> that stage
PARTS = {"gafi": "report_gafi", "equivalence": "fit_equivalence", "realfake": "evaluate_realfake",
         "synthgap": "compare_generators"}
# headline.json's column -> summary.json's headline entry (a column whose entry is missing is left out)
VIEW = {"gafi": {"real": "real_top1", "base": "baseline_cas", "gafi": "gafi_cas", "k2": "gafi_cas_k2"},
        "equiv": {"c1": "equivalence_closed_c1", "c2": "equivalence_closed_c2"},
        "realfake": {"real": "realfake_real_top1", "syn": "realfake_synthetic_top1",
                     "mix": "realfake_real_plus_synthetic_top1"}}
VERDICTS = {"better": "better", "worse": "worse", "no_diff": "no_difference"}


def headline_view(summary: dict) -> dict:
    """The narrow view of ``summary`` that DVC shows: {"gafi": {"real": mean, ...}, ..., "verdict": counts}."""
    view = {group: {column: round(summary["headline"][entry]["mean"], 2)
                    for column, entry in columns.items() if entry in summary["headline"]}
            for group, columns in VIEW.items()}
    view["verdict"] = {column: sum(c["verdict"] == v for c in summary["comparisons"]) for column, v in VERDICTS.items()}
    return {group: columns for group, columns in view.items() if columns}


def markdown(summary: dict) -> str:
    lines = ["# synthgap: headline numbers and verdicts", "",
             "Means with 95 % intervals over trials; comparisons are paired differences over the same trial seeds.", "",
             "| headline | mean | 95 % interval | trials |", "|---|---|---|---|"]
    for name, h in summary["headline"].items():
        ci = "-" if h["ci95"] is None else f"[{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}]"
        lines.append(f"| {name} | {h['mean']:.2f} | {ci} | {h['trials']} |")
    lines += ["", "| comparison | paper | difference | 95 % interval | trials | verdict |", "|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        ci = "-" if c["ci95"] is None else f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
        lines.append(f"| {c['name']} | {c['paper']} | {c['diff_mean']:+.2f} | {ci} | {c['trials']} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    params = load_stage_params(STAGE, workspace_root() / "params.yaml")
    paths = stage_paths(STAGE, *PARTS, "summary", "markdown", "headline")
    with StageRun(params, experiment="common") as run:
        summary = {"headline": {}, "comparisons": []}
        for paper, writer in PARTS.items():
            part = read_upstream_json(getattr(paths, paper), writer)
            summary["headline"].update(part["headline"])
            summary["comparisons"] += part["comparisons"]
        atomic_write_json(paths.summary, summary)
        atomic_write_text(paths.markdown, markdown(summary))
        view = headline_view(summary)
        atomic_write_json(paths.headline, view)
        run.log_artifact(paths.markdown)
        counts = {v: view["verdict"][column] for column, v in VERDICTS.items()}
        run.log_metrics({f"verdicts_{k}": n for k, n in counts.items()})
        for name, h in summary["headline"].items():
            est = Estimate(h["mean"], *(h["ci95"] or (None, None)), h["trials"])
            print(f"{name}: {est.text(2)}")
        print(f"{STAGE}: {len(summary['comparisons'])} comparisons: " + ", ".join(f"{n} {v}" for v, n in counts.items()))


if __name__ == "__main__":
    run_main(main)
