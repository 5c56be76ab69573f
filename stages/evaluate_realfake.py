"""Stage evaluate_realfake: the classifier runs of Real-Fake's Tables 1-3, each an MLflow child run.

Table 1: real only, synthetic only (``full`` img2img) and real + synthetic; Table 2: the ablation over latent
prior (img2img vs txt2img), visual guidance, distribution matching and finetuning; Table 3: x k synthetic sets
for k in ``realfake.scales`` (plus real + synthetic). Each distinct training set trains one
``realfake.classifier`` and is tested on the real test split. Writes ``reports/realfake/table{1,2,3}.{csv,md}``,
``reports/realfake/evaluate_realfake.json`` and the scaling figure (Fig. 2).
"""

from __future__ import annotations

import numpy as np

from synthgap.data import load_processed
from synthgap.data.formats import read_npz
from synthgap.errors import run_main
from synthgap.paths import atomic_write_json
from synthgap.realfake.pipeline import set_path, table_rows, train_cell, training_sets
from synthgap.realfake.report import scaling_figure
from synthgap.runtime import resolve_device
from synthgap.seeding import derive_seed
from synthgap.tables import write_table
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from stages.common import realfake_params

STAGE = "evaluate_realfake"


def main() -> None:
    params, workspace = realfake_params(STAGE)
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="realfake") as run:
        data = load_processed(workspace / "data" / "processed")
        n = len(data.y_train)
        test = to_device_tensors(data.x_test, data.y_test, device)

        def part_arrays(part):
            if part[0] == "real":
                return data.x_train, data.y_train
            _, variant, mode, copies = part
            arrays = read_npz(set_path(workspace, variant, mode), ("x_train", "y_train"))
            return arrays["x_train"][: n * copies], arrays["y_train"][: n * copies]

        accuracy = {}
        for name, parts in training_sets(cfg).items():
            xs, ys = zip(*(part_arrays(p) for p in parts))
            x, y = to_device_tensors(np.concatenate(xs), np.concatenate(ys), device)
            cell = {"training_set": name, "n_train": len(y), "n_real": n if ("real",) in parts else 0}
            with run.child(name, cell) as child:
                _, result = train_cell(cfg.classifier, x, y, data.num_classes, seed=derive_seed(params.seed, name),
                                       device=device, evals={"test": test}, desc=f"{STAGE} {name}")
                scores = {k.removeprefix("test_"): v for k, v in result.final.items() if not k.endswith("per_class")}
                child.log_metrics({"accuracy": scores["top1"], **scores})
            accuracy[name] = scores
            print(f"{STAGE}: {name} ({len(y)} images): top-1 {scores['top1']:.2f}")
        reports = workspace / "reports" / "realfake"
        tables = table_rows(cfg, accuracy)
        titles = {"table1": "Table 1: synthetic-only and real + synthetic accuracy (top-1 %)",
                  "table2": "Table 2: ablation (top-1 %)", "table3": "Table 3: scaling the synthetic set (top-1 %)"}
        for key, rows in tables.items():
            write_table(rows, reports / key, titles[key])
        scaling_figure(tables["table3"], accuracy["real"]["top1"], reports / "scaling.png")
        atomic_write_json(reports / f"{STAGE}.json", {"accuracy": accuracy, **tables})
        run.log_metrics({f"{name}_top1": acc["top1"] for name, acc in accuracy.items()})
        for key in tables:
            run.log_artifact(reports / f"{key}.md")
        run.log_artifact(reports / "scaling.png")


if __name__ == "__main__":
    run_main(main)
