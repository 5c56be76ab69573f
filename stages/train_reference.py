"""Stage train_reference: the classifier trained on real data.

Its test accuracy is the "Real Data" row of the papers' tables, and its weights are GaFi's sample filter.
Writes ``models/train_reference/classifier.pt`` (weights + settings) and, under
``reports/train_reference/``, the per-epoch history (CSV, also a DVC plot), the learning curves and the
per-class test accuracy.
"""

from __future__ import annotations

import torch

from synthgap.config import load_stage_params
from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.models import build_classifier, save_classifier, spec_for_data
from synthgap.paths import atomic_write_csv, repo_root, workspace_root
from synthgap.plots import per_class_bars, training_curves
from synthgap.runtime import resolve_device
from synthgap.seeding import derive_seed, seed_everything
from synthgap.tracking import StageRun
from synthgap.train.classifier import state_file, to_device_tensors, train_classifier

STAGE = "train_reference"


def main() -> None:
    workspace = workspace_root()
    params = load_stage_params(STAGE, workspace / "params.yaml")
    cfg = params.section.classifier
    device = resolve_device(params.device)
    with StageRun(params, experiment="common") as run:
        data = load_processed(workspace / "data" / "processed")
        seed_everything(params.seed)
        torch.manual_seed(derive_seed(params.seed, STAGE, "init"))
        model = build_classifier(spec_for_data(cfg.model, data.x_train, data.num_classes, data.name))
        train = to_device_tensors(data.x_train, data.y_train, device)
        evals = {split: to_device_tensors(*data.split(split), device) for split in ("val", "test") if len(data.split(split)[1])}
        result = train_classifier(
            model, train, cfg.train, seed=params.seed, device=device, evals=evals,
            state_path=state_file(repo_root(), STAGE, params.flat()), desc=STAGE,
            on_epoch=lambda record: run.log_metrics(record, step=record["epoch"]),
        )
        save_classifier(model, workspace / "models" / STAGE / "classifier.pt")
        reports = workspace / "reports" / STAGE
        atomic_write_csv(reports / "history.csv", result.history)
        atomic_write_csv(reports / "per_class.csv", [
            {"class": name, "test_top1": acc} for name, acc in zip(data.classes, result.final["test_per_class"])
        ])
        training_curves(result.history, reports / "curves.png", f"{STAGE}: {data.name}, {cfg.model.arch} w{cfg.model.width}")
        per_class_bars(result.final["test_per_class"], data.classes, reports / "per_class.png", "test accuracy per class")
        scalars = {k: v for k, v in result.final.items() if not k.endswith("per_class")}
        run.log_metrics(scalars)
        run.log_metrics({"train_seconds": sum(r["seconds"] for r in result.history)}, timing=True)
        for name in ("history.csv", "per_class.csv", "curves.png", "per_class.png"):
            run.log_artifact(reports / name)
        print(f"{STAGE}: " + ", ".join(f"{k} {v:.2f}" for k, v in scalars.items()))


if __name__ == "__main__":
    run_main(main)
