"""Do the verdicts hold on another machine? The comparisons of two runs of the same pipeline, side by side.

    python -m benchmarks.verdicts --other REV

``REV`` is a commit whose ``reports/summary.json`` came from ``dvc repro`` on another machine (named by that
commit's ``benchmarks/results/repro-cpu.json``), with the same params and code as the reports in this working
tree, which this machine wrote; or, with ``--name verdicts-recipe``, a run of other params (the result lists
the keys of ``params.yaml`` that differ), to see what a change of the embedded default did to the verdicts. Float kernels differ between CPUs, so the numbers move; what must not happen is
a verdict going from ``better`` to ``worse`` or back (a *flip*). A verdict that moves between a direction and
``no_difference`` is an interval near 0 on one of the two machines. Writes ``benchmarks/results/<name>-cpu.json``
(every comparison whose verdict differs, with both intervals, and the counts); the README's cross-machine
paragraph is generated from it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import report
from benchmarks.repro import ROOT
from synthgap.config import flatten, read_params_file

HEADLINE = ("gafi_vs_baseline", "gafi_vs_real", "baseline_vs_real", "filtered_vs_unfiltered_chosen_stddev",
            "closed_vs_real_")  # issue 13's headline comparisons (a trailing _: every comparison so named)


def committed_json(rev: str, path: str) -> dict:
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark: error: no {path} at {rev}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def verdict_changes(other: list[dict], here: list[dict]) -> tuple[list[dict], list[str]]:
    """The comparisons whose verdicts differ between two runs (each with both means, intervals and verdicts),
    and the names that only one run has."""
    a, b = {c["name"]: c for c in other}, {c["name"]: c for c in here}
    changes = [{"name": name, "paper": b[name]["paper"],
                "flip": {a[name]["verdict"], b[name]["verdict"]} == {"better", "worse"},
                "other": {k: a[name][k] for k in ("verdict", "diff_mean", "ci95")},
                "here": {k: b[name][k] for k in ("verdict", "diff_mean", "ci95")}}
               for name in a if name in b and a[name]["verdict"] != b[name]["verdict"]]
    return changes, sorted(set(a) ^ set(b))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verdicts", description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="a commit whose reports another machine wrote")
    parser.add_argument("--name", default="verdicts",
                        help="results file benchmarks/results/<name>-cpu.json (e.g. verdicts-recipe for a params change)")
    args = parser.parse_args()
    other = committed_json(args.other, "reports/summary.json")
    here = json.loads((ROOT / "reports" / "summary.json").read_text())
    changes, unmatched = verdict_changes(other["comparisons"], here["comparisons"])
    if unmatched:
        sys.exit(f"benchmark: error: the two runs do not make the same comparisons ({', '.join(unmatched[:5])}); "
                 "compare runs of the same params")
    headline = {c["name"] for c in here["comparisons"]
                if any(c["name"] == h or (h.endswith("_") and c["name"].startswith(h)) for h in HEADLINE)}
    result = {
        "benchmark": "verdicts", "other_commit": subprocess.run(["git", "rev-parse", args.other], cwd=ROOT,
                                                               capture_output=True, text=True).stdout.strip(),
        "other_device": committed_json(args.other, "benchmarks/results/repro-cpu.json")["device"],
        "comparisons": len(here["comparisons"]), "flips": sum(c["flip"] for c in changes),
        "changed": len(changes), "headline": sorted(headline), "headline_changed": sorted(c["name"] for c in changes if c["name"] in headline),
        "params_changed": params_changed(committed_params(args.other), read_params_file(ROOT / "params.yaml")),
        "changes": changes,
    }
    report(args.name, torch.device("cpu"), result)


def params_changed(before: dict, now: dict) -> list[str]:
    """The dotted keys of two params trees (``params.yaml`` as read) whose values differ."""
    before, now = flatten(before), flatten(now)
    return sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))


def committed_params(rev: str) -> dict:
    """``params.yaml`` at commit ``rev``, read as the stages read it (YAML 1.2, as DVC)."""
    proc = subprocess.run(["git", "show", f"{rev}:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(proc.stdout)
        return read_params_file(path)


if __name__ == "__main__":
    main()
