"""Stage report_gafi: Tables 1-4 (CSV + Markdown) and Figures 2-3 under reports/gafi/, from the stages' outputs."""

from __future__ import annotations

import json

from synthgap.errors import UserError, run_main
from synthgap.gafi import report
from synthgap.paths import atomic_write_csv
from synthgap.tables import markdown, write_table
from synthgap.tracking import StageRun
from stages.common import gafi_params

STAGE = "report_gafi"


def read(path):
    if not path.is_file():
        raise UserError(f"{path} not found", "run `dvc repro` to produce the GaFi stages' outputs first")
    return json.loads(path.read_text())


def main() -> None:
    params, workspace = gafi_params(STAGE)
    gafi, reports = params.section, workspace / "reports" / "gafi"
    with StageRun(params, experiment="gafi") as run:
        dataset = json.loads((workspace / "data" / "processed" / "info.json").read_text())["name"]
        real = read(workspace / "reports" / "metrics" / "train_reference.json")["test_top1"]
        baseline = read(reports / "cas_baseline.json")["best"]
        final = read(reports / "cas_final.json")["best"]
        multi = read(reports / "cas_multi.json")["rows"]
        tables = {
            "table1": report.table1(dataset, baseline, read(reports / "ablate_filtering.json")["rows"]),
            "table2": report.table2(dataset, baseline, read(reports / "ablate_recycle.json")["rows"]),
            "table3": report.table3(dataset, final),
            "table4": report.table4(dataset, real, baseline, final, multi),
        }
        for name, rows in tables.items():
            for path in write_table(rows, reports / name, f"GaFi {name.replace('table', 'Table ')} (CAS, %)"):
                run.log_artifact(path, "tables")
        fig2 = report.figure2(read(reports / "ablate_stddev.json")["rows"], reports / "figure2.png", dataset)
        per_seed = {s: read(reports / "select_checkpoint" / f"seed_{s}.json")["rows"] for s in gafi.generator_seeds}
        fig3 = report.figure3(per_seed, reports / "figure3.png", dataset)
        atomic_write_csv(reports / "figure2.csv", fig2)
        atomic_write_csv(reports / "figure3.csv", fig3)
        for name in ("figure2.png", "figure3.png"):
            run.log_artifact(reports / name, "figures")
        gafi_best = max([final["cas"]] + [r["cas"] for r in multi])
        run.log_metrics({"real_top1": real, "baseline_cas": baseline["cas"], "gafi_cas_k1": final["cas"],
                         "gafi_cas_best": gafi_best, "gap_baseline": real - baseline["cas"], "gap_gafi": real - gafi_best})
        print(markdown(tables["table4"], "GaFi Table 4 (CAS, %)"))


if __name__ == "__main__":
    run_main(main)
