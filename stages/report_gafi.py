"""Stage report_gafi: Tables 1-4 (CSV + Markdown) and Figures 2-3 under reports/gafi/, from the stages' outputs,
with every cell a mean and 95 % interval over trials, and the paper's comparisons as paired differences with a verdict
(``reports/gafi/comparisons.md``; headline numbers and comparisons in ``reports/gafi/summary.json``).

Table 4 quotes the paper's published rows (``src/synthgap/gafi/published_table4.csv``) under ours and, in its Markdown,
all five datasets'. Real Data follows the CAS protocol of ``gafi.select_on``: the final test top-1 (val), or the
best test top-1 over epochs (test). ``reports/gafi/generator_quality.*``: FID / IS / KID from cas_final."""

from __future__ import annotations

from synthgap.data import load_info
from synthgap.errors import run_main
from synthgap.gafi import report
from synthgap.paths import atomic_write_csv, atomic_write_json, instance_of, item_path, read_upstream_json
from synthgap.stats import headline as headline_of
from synthgap.tables import markdown, write_table
from synthgap.tracking import StageRun
from stages.common import gafi_params

STAGE = "report_gafi"


def main() -> None:
    params, paths = gafi_params(STAGE, "data", "real", "baseline", "final", "multi", "filtering", "recycle",
                                "stddevs", "checkpoints", "out")
    gafi, reports = params.section, paths.out
    with StageRun(params, experiment="gafi") as run:
        dataset = load_info(paths.data)["name"]
        trials = read_upstream_json(paths.real, "train_reference")
        real = report.real_data(trials["summary"][0], gafi.select_on)
        published = report.read_published()
        baseline = read_upstream_json(paths.baseline, "cas_baseline")["best"]
        final_json = read_upstream_json(paths.final, "cas_final")
        final = final_json["best"]
        multi = read_upstream_json(paths.multi, "cas_multi")["rows"]
        grids = {name: read_upstream_json(path, name)["rows"] for name, path in
                 (("ablate_filtering", paths.filtering), ("ablate_recycle", paths.recycle), ("ablate_stddev", paths.stddevs))}
        tables = {
            "table1": report.table1(dataset, baseline, grids["ablate_filtering"]),
            "table2": report.table2(dataset, baseline, grids["ablate_recycle"]),
            "table3": report.table3(dataset, final),
            "table4": report.table4(dataset, real, baseline, final, multi, published),
        }
        appendix = {"table4": markdown(report.published_table4(published), "Published GaFi Table 4, quoted (CAS, %; "
                                       "in brackets the gap to Real Data), all five datasets")}
        n_base, n_final = len(baseline["cas_trials"]), len(final["cas_trials"])  # headline cells: maybe more trials
        over = {"table1": f"{params.trials} trials" + (f", No Filtering {n_base}" if n_base != params.trials else ""),
                "table2": f"{params.trials} trials" + (f", No Recycle {n_base}" if n_base != params.trials else ""),
                "table3": f"{n_final} trials", "table4": "the trials in its Trials column"}
        for name, rows in tables.items():
            title = f"GaFi {name.replace('table', 'Table ')} (CAS, %: mean ± 95 % interval over {over[name]})"
            for path in write_table(rows, reports / name, title, appendix.get(name, "")):
                run.log_artifact(path, "tables")
        quality = final_json.get("quality", [])
        quality_rows = report.quality_table(quality) or [{"Note": "none in cas_final.json (gafi.quality.images: 0?)"}]
        for path in write_table(quality_rows, reports / "generator_quality",
                                f"GaFi generator quality ({dataset}, chosen checkpoints; cas_final)"):
            run.log_artifact(path, "tables")
        fig2 = report.figure2(grids["ablate_stddev"], reports / "figure2.png", dataset)
        per_seed = {s: read_upstream_json(path := item_path(paths.checkpoints, s, ".json"), instance_of(path))["rows"]
                    for s in gafi.generator_seeds}
        fig3 = report.figure3(per_seed, reports / "figure3.png", dataset)
        atomic_write_csv(reports / "figure2.csv", fig2)
        atomic_write_csv(reports / "figure3.csv", fig3)
        for name in ("figure2.png", "figure3.png"):
            run.log_artifact(reports / name, "figures")
        comparisons = report.comparisons(real, baseline, final, multi, grids["ablate_filtering"],
                                         grids["ablate_recycle"], grids["ablate_stddev"])
        headline = {"real_top1": headline_of(real), "baseline_cas": headline_of(baseline["cas_trials"]),
                    "gafi_cas": headline_of(final["cas_trials"]),
                    **{f"gafi_cas_k{r['num_generators']}": headline_of(r["cas_trials"]) for r in multi}}
        atomic_write_json(reports / "summary.json", {"headline": headline, "comparisons": comparisons})
        write_table([{k: c[k] for k in ("name", "diff_mean", "ci95", "trials", "verdict")} for c in comparisons],
                    reports / "comparisons", "GaFi: paired comparisons (CAS points, 95 % interval over trials)")
        run.log_artifact(reports / "summary.json")
        run.log_metrics({name: value["mean"] for name, value in headline.items()})
        print(markdown(tables["table4"], "GaFi Table 4 (CAS, %)"))
        for c in comparisons:
            print(f"{c['name']}: {c['verdict']} ({c['diff_mean']:+.2f}, 95 % CI {c['ci95']})")


if __name__ == "__main__":
    run_main(main)
