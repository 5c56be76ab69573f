"""Stage evaluate_realfake: the classifier runs of Real-Fake's Tables 1-3, each an MLflow child run.

Table 1: real only, synthetic only (``full`` img2img) and real + synthetic; Table 2: the ablation over latent
prior (img2img vs txt2img), visual guidance, distribution matching and finetuning; Table 3: x k synthetic sets
for k in ``realfake.scales`` (plus real + synthetic). Table 2 also says how much of each set the real-data
classifier (train_reference, ``--reference``) recognises as its label, per trial block: the domain gap that
finetuning closes (``reference_top1``). Every classifier is also tested on each
out-of-distribution set of ``realfake.ood`` (section 4.4; ``synthgap.data.ood``): a Table 1 column per set. Each distinct training set trains one
``realfake.classifier`` and is tested on the real test split. Writes, in ``--out`` (``reports/realfake/``), ``table{1,2,3}.{csv,md}``,
``evaluate_realfake.json`` and the scaling figure (Fig. 2).
"""

from __future__ import annotations

import numpy as np
import torch

from synthgap.data import load_processed
from synthgap.data.formats import read_npz
from synthgap.data.ood import load_ood
from synthgap.errors import UserError, run_main
from synthgap.grid import Job, run_jobs, summarise
from synthgap.metrics import evaluate
from synthgap.models import build_classifier, check_compatible, load_classifier, spec_for_data
from synthgap.paths import atomic_write_json, repo_root
from synthgap.realfake.pipeline import set_path, table_rows, training_sets, trial_block
from synthgap.realfake.report import comparisons as realfake_comparisons
from synthgap.realfake.report import scaling_figure
from synthgap.runtime import resolve_device
from synthgap.seeding import derive_seed, trial_seed
from synthgap.stats import estimate
from synthgap.stats import headline as headline_of
from synthgap.tables import write_table
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from stages.common import realfake_params

STAGE = "evaluate_realfake"


def score(job, result) -> dict:
    scores = {k.removeprefix("test_"): v for k, v in result.final.items() if not k.endswith("per_class")}
    return {"accuracy": scores["top1"], **scores}


def main() -> None:
    params, paths = realfake_params(STAGE, "data", "sets", "reference", "out")
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="realfake") as run:
        data = load_processed(paths.data)
        reference = load_classifier(paths.reference, device).eval()
        check_compatible(reference, data.num_classes, data.image_shape, data.name, paths.reference)
        n = len(data.y_train)
        test = to_device_tensors(data.x_test, data.y_test, device)

        def part_arrays(part, trial):
            if part[0] == "real":
                return data.x_train, data.y_train
            _, variant, mode, copies = part
            arrays = read_npz(set_path(paths.sets, variant, mode), ("x_train", "y_train"))
            block = trial_block(cfg, variant, mode, n, trial, copies)
            if block.stop > len(arrays["y_train"]):
                raise UserError(f"{set_path(paths.sets, variant, mode)} holds too few images for {params.trials} trials",
                                "rerun `dvc repro synthesize_realfake` with the current trials")
            return arrays["x_train"][block], arrays["y_train"][block]

        jobs = []
        for name, parts in training_sets(cfg).items():
            for trial in range(params.trials):
                seed = trial_seed(params.seed, trial)
                xs, ys = zip(*(part_arrays(p, trial) for p in parts))
                x, y = np.concatenate(xs), np.concatenate(ys)
                torch.manual_seed(derive_seed(seed, "init"))
                model = build_classifier(spec_for_data(cfg.classifier.model, x, data.num_classes, "realfake"))
                cell = {"training_set": name, "n_train": len(y), "n_real": n if ("real",) in parts else 0}
                jobs.append(Job(name, cell, trial, seed, model, to_device_tensors(x, y, device), len(y), cfg.classifier.train))
        ood = [load_ood(spec, data.classes, data.x_test, data.y_test, repo_root(), derive_seed(params.seed, "ood", spec.name))
               for spec in cfg.ood]
        for o in ood:
            print(f"{STAGE}: out-of-distribution set {o.name}: {len(o.y):,} images of {len(o.covered)} of "
                  f"{data.num_classes} classes", flush=True)
        evals = {"test": test} | {f"ood_{o.name}": to_device_tensors(o.x, o.y, device) for o in ood}
        rows = run_jobs(run, STAGE, jobs, score, device=device, evals=evals)
        accuracy = {row["cell"]: row for row in summarise(rows, ("top1", "top5", *(f"ood_{o.name}_top1" for o in ood)))}
        for job in jobs:  # how much of each synthetic set the real-data classifier recognises (jobs: in trial order)
            if job.params["n_real"] == 0:
                accuracy[job.cell].setdefault("reference_top1_trials", []).append(evaluate(reference, *job.train_set)["top1"])
        run.record_cells(list(accuracy.values()), ("top1",))
        for name, row in accuracy.items():
            print(f"{STAGE}: {name} ({row['n_train']} images): top-1 {estimate(row['top1_trials']).text(2)}")
        reports = paths.out
        tables = table_rows(cfg, accuracy)
        over = f"top-1 %, mean ± 95 % interval over {params.trials} trials"
        titles = {"table1": f"Table 1: synthetic-only and real + synthetic accuracy ({over})",
                  "table2": f"Table 2: ablation ({over})", "table3": f"Table 3: scaling the synthetic set ({over})"}
        for key, rows in tables.items():
            write_table(rows, reports / key, titles[key])
        scaling_figure(cfg, accuracy, reports / "scaling.png")
        comparisons = realfake_comparisons(cfg, accuracy)
        headline = {"realfake_real_top1": headline_of(accuracy["real"]["top1_trials"]),
                    "realfake_synthetic_top1": headline_of(accuracy["full_img2img"]["top1_trials"]),
                    "realfake_real_plus_synthetic_top1": headline_of(accuracy["real_plus_full_img2img"]["top1_trials"])}
        ood_sets = {o.name: {"format": spec.format, "images": len(o.y), "classes": list(o.covered)} for o, spec in zip(ood, cfg.ood)}
        atomic_write_json(reports / f"{STAGE}.json", {"accuracy": accuracy, "trials": rows, "ood": ood_sets, **tables})
        atomic_write_json(reports / "summary.json", {"headline": headline, "comparisons": comparisons})
        write_table([{k: c[k] for k in ("name", "diff_mean", "ci95", "trials", "verdict")} for c in comparisons],
                    reports / "comparisons", "Real-Fake: paired comparisons (top-1 points, 95 % interval over trials)")
        run.log_metrics({f"{name}_top1": acc["top1"] for name, acc in accuracy.items()})
        for key in (*tables, "comparisons"):
            run.log_artifact(reports / f"{key}.md")
        run.log_artifact(reports / "scaling.png")


if __name__ == "__main__":
    run_main(main)
