"""Stage train_reference: the classifier trained on real data.

Trained ``train_reference.trials`` times (null: ``trials``; trial seeds as every grid, stacked into one network where the architecture allows);
the mean test accuracy with its 95 % interval is the "Real Data" row of the papers' tables (val and test are
scored after every epoch: ``best_test_top1`` is the best test top-1 over epochs, GaFi's Real Data with
``gafi.select_on: test``). GaFi's sample filter is trial 0, or with ``train_reference.filter`` one more classifier
trained with that recipe (trial 0's seed).
Writes the filter to ``--out`` (``models/train_reference/classifier.pt``: weights + settings) and, under
``--reports`` (``reports/train_reference/``), its per-epoch history (CSV, also a DVC plot), learning curves and per-class test
accuracy, and ``trials.json`` (the Real Data rows and summary, and the separate filter's row).
"""

from __future__ import annotations

import torch

from synthgap.config import load_stage_params
from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.models import build_classifier, save_classifier, spec_for_data
from synthgap.grid import Job, run_jobs, summarise
from synthgap.paths import atomic_write_csv, atomic_write_json, repo_root, workspace_root
from synthgap.plots import per_class_bars, training_curves
from synthgap.runtime import resolve_device
from synthgap.seeding import derive_seed, seed_everything, trial_seed
from synthgap.stats import estimate
from synthgap.tracking import StageRun
from stages.common import stage_paths
from synthgap.train.classifier import to_device_tensors
from synthgap.train.state import state_file

STAGE = "train_reference"
METRICS = ("val_top1", "test_top1", "test_top5", "best_test_top1")


def main() -> None:
    params = load_stage_params(STAGE, workspace_root() / "params.yaml")
    paths = stage_paths(STAGE, "data", "out", "reports")
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="common") as run:
        data = load_processed(paths.data)
        seed_everything(params.seed)
        train = to_device_tensors(data.x_train, data.y_train, device)
        evals = {split: to_device_tensors(*data.split(split), device) for split in ("val", "test") if len(data.split(split)[1])}

        def job(cell, recipe, trial):
            seed = trial_seed(params.seed, trial)
            torch.manual_seed(derive_seed(seed, "init"))
            model = build_classifier(spec_for_data(recipe.model, data.x_train, data.num_classes, data.name))
            return Job(cell, {"data": data.name}, trial, seed, model, train, len(data.y_train), recipe.train)

        jobs = [job("real", cfg.classifier, trial) for trial in range(cfg.trials or params.trials)]
        jobs += [job("filter", cfg.filter, 0)] if cfg.filter else []

        def curve(record):  # trial 0's learning curve; the run's own test_top1 etc. are the means over trials
            return {f"epoch_{k}": v for k, v in record.items() if k != "epoch"}

        def score(job, result):
            best = {"best_test_top1": max(r["test_top1"] for r in result.history)} if "test" in evals else {}
            return {k: v for k, v in result.final.items() if not k.endswith("per_class")} | best

        all_rows = run_jobs(run, STAGE, jobs, score, device=device, evals=evals, eval_every_epoch=True,
                            state_path=state_file(repo_root(), STAGE, params.flat()),
                            on_epoch=lambda records: run.log_metrics(curve(records[0]), step=records[0]["epoch"]))
        rows = [r for r in all_rows if r["cell"] == "real"]
        filter_row = next((r for r in all_rows if r["cell"] == "filter"), None)
        first = jobs[-1] if cfg.filter else jobs[0]  # the reference classifier (GaFi's sample filter)
        save_classifier(first.model, paths.out)
        reports = paths.reports
        atomic_write_csv(reports / "history.csv", first.result.history)
        atomic_write_csv(reports / "per_class.csv", [
            {"class": name, "test_top1": acc} for name, acc in zip(data.classes, first.result.final["test_per_class"])
        ])
        atomic_write_json(reports / "trials.json", {"rows": rows, "summary": summarise(rows, METRICS), "filter": filter_row})
        which, spec = ("filter", cfg.filter.model) if cfg.filter else ("trial 0", cfg.classifier.model)
        training_curves(first.result.history, reports / "curves.png", f"{STAGE}: {data.name}, {spec.arch} w{spec.width} ({which})")
        per_class_bars(first.result.final["test_per_class"], data.classes, reports / "per_class.png", f"test accuracy per class ({which})")
        summary = summarise(rows, tuple(k for k in METRICS if k in rows[0]))[0]
        run.log_metrics({k: summary[k] for k in METRICS if k in summary})
        if filter_row:
            run.log_metrics({f"filter_{k}": filter_row[k] for k in METRICS if k in filter_row})
        run.log_metrics({"train_seconds": sum(r["seconds"] for j in jobs for r in j.result.history)}, timing=True)
        for name in ("history.csv", "per_class.csv", "trials.json", "curves.png", "per_class.png"):
            run.log_artifact(reports / name)
        print(f"{STAGE}: " + ", ".join(f"{k} {estimate(summary[f'{k}_trials']).text(2)}" for k in METRICS if k in summary))


if __name__ == "__main__":
    run_main(main)
