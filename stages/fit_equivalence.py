"""Stage fit_equivalence: regress the equivalence formula (Equivalence paper, appendix A) from results.

In the pipeline (``dvc repro``, the paths of dvc.yaml's cmd) it reads the ``augment@<n_base>`` results: the
child runs of each stage's MLflow run (its id is in the stage's metrics file ``--metrics/augment@<n>.json``),
falling back to the rows of ``--grids/<n>.json`` (``reports/equivalence/augment/``) when MLflow lacks them
(DVC's run-cache skipped the stage, or the database is elsewhere), and writes ``--out``
(``reports/equivalence/``).

Standalone (refit any table, e.g. the paper's own)::

    python -m stages.fit_equivalence --results FILE.csv --n-total N --out DIR [--ratios 1,2,3] [--features paper|best]

``FILE.csv`` has ``setting,n_base,n_real_added,n_syn_added,accuracy`` (percent; optional ``trial``).
Writes ``DIR/equivalence.json``, ``DIR/equivalence.md`` and the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from synthgap.equivalence import figures
from synthgap.equivalence.fit import fit_all, formula
from synthgap.errors import UserError, run_main
from synthgap.paths import atomic_write_csv, atomic_write_json, atomic_write_text, read_upstream_json


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.fit_equivalence", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="CSV of augmentation results (default: the pipeline's)")
    parser.add_argument("--n-total", type=int, help="size of the full training set (tau = 10 / n_total)")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument("--ratios", default="1,2,3", help="n_real+ / n_base values to solve at (comma-separated)")
    parser.add_argument("--features", choices=("paper", "best"), default="paper")
    parser.add_argument("--eps", type=float, default=1e-3)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser.parse_args(argv)


def write_outputs(frame: pd.DataFrame, fits: dict, out: Path, label: str, n_total: int, declared: tuple[str, ...] = ()) -> None:
    """The fit's files and figures in ``out``. ``declared``: the synthetic settings whose contour figure (and,
    with them, the IR table and figure) the pipeline declares; a declared one without a fit gets a figure that
    says why, and the IR files are written even when there is no IR to draw."""
    atomic_write_json(out / "equivalence.json", {s: f.to_json() for s, f in fits.items()})
    lines = [f"# Equivalence fit: {label}", "", f"tau = 10 / n_total = 1 / {n_total / 10:,.0f}", ""]
    for setting, fit in fits.items():
        lines += [f"## {setting}", "", f"    {formula(fit)}", "",
                  f"R² of the equivalence fit: {fit.r2:.3f}; features: {', '.join(fit.features)}; "
                  f"{len(fit.tuples)} tuples from base sizes {sorted(fit.models)}", ""]
        if fit.c1_ci is not None:
            lines += [f"95 % bootstrap intervals: c1 in [{fit.c1_ci[0]:.3f}, {fit.c1_ci[1]:.3f}], "
                      f"c2 in [{fit.c2_ci[0]:.3f}, {fit.c2_ci[1]:.3f}]", ""]
        lines += ["| n_base | n_real+/n_base | n_syn+/n_base |", "|---|---|---|"]
        lines += [f"| {b:,.0f} | {r:g} | {y:.2f} |" for b, r, y in fit.tuples] + [""]
        middle = sorted(fit.models)[len(fit.models) // 2]
        figures.contour(fit, middle, out / f"contour_{setting}.png", f"{label} {setting}: n_base = {middle:,}")
    atomic_write_text(out / "equivalence.md", "\n".join(lines))
    figures.accuracy_curves(frame, fits, out / "accuracy_curves.png", label)
    for setting in sorted(set(declared) - set(fits)):
        figures.missing(out / f"contour_{setting}.png", f"{label} {setting}",
                        f"no {setting}-set cells (equivalence.open_set.source: none)" if setting == "open" else f"no {setting}-set fit")
    ir = figures.improvement_ratio(frame)
    if len(ir) or declared:
        atomic_write_text(out / "improvement_ratio.csv", ir.to_csv(index=False))
    if len(ir):
        figures.ir_plot(ir, out / "improvement_ratio.png", label)
    elif declared:
        figures.missing(out / "improvement_ratio.png", f"{label}: improvement ratio",
                        "IR needs closed- and open-set cells at 1:1 and the base alone")


def collect_pipeline_results(grids: Path, metrics_folder: Path, base_sizes, run) -> tuple[pd.DataFrame, dict]:
    """Rows of every augment@<n> stage, from MLflow where complete (the stage's run id is in its metrics
    file in ``metrics_folder``; ``run`` asks the tracking store), else from the stage's JSON file in the
    folder ``grids``."""
    import json

    from synthgap.paths import instance_of, item_path

    frames, sources = [], {}
    for n_base in base_sizes:
        path = item_path(grids, n_base, ".json")
        file_rows = pd.DataFrame(read_upstream_json(path, instance_of(path))["rows"])
        metrics = metrics_folder / f"{instance_of(path)}.json"
        parent = json.loads(metrics.read_text()).get("mlflow_run_id") if metrics.is_file() else None
        runs = run.finished_children("equivalence", parent) if parent else []
        mlflow_rows = pd.DataFrame([
            {"setting": r["params"]["setting"], "n_base": int(r["params"]["n_base"]),
             "n_real_added": int(r["params"]["n_real_added"]), "n_syn_added": int(r["params"]["n_syn_added"]),
             "trial": int(r["params"]["trial"]), "accuracy": r["metrics"]["accuracy"]}
            for r in runs if "accuracy" in r["metrics"]
        ])
        complete = len(mlflow_rows) == len(file_rows)
        frames.append(mlflow_rows if complete else file_rows[list(REQUIRED_COLUMNS)])
        sources[n_base] = "mlflow" if complete else "metrics file"
    # one row order whatever the source (MLflow lists runs newest first): the bootstrap resamples by position
    frame = pd.concat(frames, ignore_index=True).sort_values(list(REQUIRED_COLUMNS[:5]), ignore_index=True)
    return frame, sources


REQUIRED_COLUMNS = ("setting", "n_base", "n_real_added", "n_syn_added", "trial", "accuracy")


def summary_of(frame: pd.DataFrame, fits: dict) -> dict:
    """Headline numbers and paired comparisons (same trial seeds on both sides) for reports/summary.json:
    for each base size, synthetic additions against as many real ones, and against the base alone."""
    from synthgap.stats import compare, headline

    def trials(setting: str, n_base: int, real: int, syn: int) -> list[float] | None:
        cell = frame[(frame.setting == setting) & (frame.n_base == n_base) & (frame.n_real_added == real) & (frame.n_syn_added == syn)]
        if cell.empty:
            return None
        cell = cell.sort_values("trial")
        if cell.trial.tolist() != list(range(len(cell))):  # compare() pairs trial i with trial i
            raise UserError(f"augment results of n_base {n_base}, {setting} +{max(real, syn)} hold trials "
                            f"{cell.trial.tolist()}, not 0..{len(cell) - 1}", "rerun `dvc repro augment` for that base size")
        return cell.accuracy.astype(float).tolist()

    head, comparisons = {}, []
    for setting, fit in fits.items():
        head[f"equivalence_{setting}_c1"] = {"mean": round(fit.c1, 6), "ci95": list(fit.c1_ci) if fit.c1_ci else None,
                                             "trials": int(frame.trial.nunique())}
        head[f"equivalence_{setting}_c2"] = {"mean": round(fit.c2, 6), "ci95": list(fit.c2_ci) if fit.c2_ci else None,
                                             "trials": int(frame.trial.nunique())}
    for n_base in sorted(frame.n_base.unique()):
        base = trials("real", n_base, 0, 0)
        if base is not None:
            head[f"equivalence_base{n_base}_top1"] = headline(base)
        for setting in sorted(set(frame.setting) - {"real"}):
            for syn in sorted(frame[(frame.setting == setting) & (frame.n_base == n_base)].n_syn_added.unique()):
                ours, real = trials(setting, n_base, 0, syn), trials("real", n_base, syn, 0)
                if real is not None:
                    comparisons.append(compare(f"{setting}_vs_real_n{n_base}_plus{syn}", "equivalence", ours, real,
                                               n_base=int(n_base), added=int(syn)))
                if base is not None and syn == min(frame[(frame.setting == setting) & (frame.n_base == n_base)].n_syn_added):
                    comparisons.append(compare(f"{setting}_plus{syn}_vs_base_n{n_base}", "equivalence", ours, base,
                                               n_base=int(n_base), added=int(syn)))
    return {"headline": head, "comparisons": comparisons}


def pipeline_main() -> None:
    from synthgap.config import load_stage_params
    from synthgap.data import load_info
    from synthgap.paths import workspace_root
    from synthgap.tracking import StageRun
    from stages.common import stage_paths

    params = load_stage_params("fit_equivalence", workspace_root() / "params.yaml", section="equivalence")
    paths = stage_paths("fit_equivalence", "data", "grids", "metrics", "out")
    cfg, out = params.section, paths.out
    with StageRun(params, experiment="equivalence") as run:
        info = load_info(paths.data)
        frame, sources = collect_pipeline_results(paths.grids, paths.metrics, cfg.base_sizes, run)
        n_total = cfg.n_total or info["sizes"]["train"]
        fits = fit_all(frame, n_total, ratios=tuple(cfg.fit_ratios))
        atomic_write_csv(out / "results.csv", frame.to_dict("records"))
        write_outputs(frame, fits, out, info["name"], n_total, declared=("closed", "open"))
        for setting, fit in fits.items():
            run.log_metrics({f"{setting}_c1": fit.c1, f"{setting}_c2": fit.c2, f"{setting}_r2": fit.r2, f"{setting}_tuples": len(fit.tuples)})
            print(f"{setting}: {formula(fit)} (R² {fit.r2:.3f}, {len(fit.tuples)} tuples)")
        summary = summary_of(frame, fits)
        atomic_write_json(out / "summary.json", summary)
        for c in summary["comparisons"]:
            print(f"{c['name']}: {c['verdict']} ({c['diff_mean']:+.2f}, 95 % CI {c['ci95']})")
        run.set_tags({"results_source": ",".join(f"{b}:{s}" for b, s in sources.items())})
        for name in ("equivalence.json", "equivalence.md", "results.csv", "summary.json", "accuracy_curves.png",
                     "improvement_ratio.csv", "improvement_ratio.png"):
            run.log_artifact(out / name)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not any(a == "--results" or a.startswith("--results=") for a in argv):
        return pipeline_main()
    args = parse(argv)
    if args.n_total is None or args.out is None:
        raise UserError("--results needs --n-total and --out", "pass all three, or none to fit the pipeline's results")
    if not args.results.is_file():
        raise UserError(f"results file {args.results} not found", "pass the CSV of augmentation results with --results")
    if args.n_total <= 0:
        raise UserError(f"--n-total {args.n_total} must be positive", "pass the size of the full training set")
    try:
        ratios = tuple(float(r) for r in args.ratios.split(","))
    except ValueError:
        raise UserError(f"--ratios '{args.ratios}' is not a comma-separated list of numbers", "e.g. --ratios 1,2,3") from None
    if any(r <= 0 for r in ratios):
        raise UserError(f"--ratios {args.ratios} must be positive", "e.g. --ratios 1,2,3")
    try:
        frame = pd.read_csv(args.results)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{args.results} is not a readable CSV ({err})", "write it with a header row") from None
    fits = fit_all(frame, args.n_total, ratios=ratios, features=args.features, eps=args.eps)
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(frame, fits, args.out, args.results.stem, args.n_total)
    for setting, fit in fits.items():
        print(f"{setting}: {formula(fit)} (R² {fit.r2:.3f})")


if __name__ == "__main__":
    run_main(main)
