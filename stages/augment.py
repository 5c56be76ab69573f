"""Stage augment@<n_base>: classifiers trained on the base subset plus real or synthetic additions.

One child MLflow run per cell and trial (``augment@<n>/<setting>+<added>/trial=<i>``) with params ``setting,
n_base, n_real_added, n_syn_added, trial`` and metric ``accuracy`` (test top-1, %; ``top5`` too with more than 10
classes), tested on the full real test set. The closed-set pool is sample_diffusion's (``--pool``); the open-set
pool follows ``equivalence.open_set.source`` (``stand_in``: ``base_txt2img.npz`` in synthesize_realfake's folder
``--sets``). Epochs follow ``equivalence.epochs_by_base`` with lr x0.1 at 50 % and 75 %. Writes
``--out`` (``reports/equivalence/augment/<n>.json``, with ``dropped_cells``). Before any training it prints one
warning line per cell the grid drops (base size, setting, ratio, why), warns when this base size has no real
cell (fit_equivalence then leaves it out), and refuses (UserError) a grid where no base size has real cells, an
open-set folder whose class folders are not the dataset's classes, or a pool smaller than a cell needs.
"""

from __future__ import annotations

import torch

from synthgap.equivalence.grid import (
    cell_training_set,
    check_pool_sizes,
    check_real_cells,
    dropped_line,
    epochs_for,
    grid_cells,
    synthetic_pools,
)
from synthgap.errors import run_main
from synthgap.models import build_classifier, spec_for_data
from synthgap.paths import atomic_write_json, repo_root
from synthgap.runtime import resolve_device
from synthgap.grid import Job, run_jobs, summarise
from synthgap.seeding import derive_seed, trial_seed
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from stages.common import base_subset, equivalence_foreach_params

STAGE = "augment"


def score(job, result) -> dict:
    """Test top-1 (``accuracy``, %) and top-5 with more than 10 classes."""
    return {"accuracy": result.final["test_top1"]} | ({"top5": result.final["test_top5"]} if "test_top5" in result.final else {})


def main() -> None:
    params, n_base, paths = equivalence_foreach_params(STAGE, "data", "pool", "sets", "out")
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="equivalence") as run:
        data, base_idx = base_subset(paths.data, n_base, cfg.merge_train_val)
        pools = synthetic_pools(cfg, paths.pool, paths.sets, data, repo_root())
        # everything the grid cannot hold is said (or refused) before any training
        ratios = {b: {s: cfg.ratios(b, s) for s in ("real", *pools)} for b in cfg.base_sizes}
        grids = {b: grid_cells(b, len(data.y_train), ratios[b], tuple(pools)) for b in cfg.base_sizes}
        without_real = check_real_cells({b: cells for b, (cells, _) in grids.items()}, len(data.y_train))
        cells, dropped = grids[n_base]
        check_pool_sizes(cells, pools)
        for drop in dropped:
            print(dropped_line(params.stage, drop), flush=True)
        if n_base in without_real:
            print(f"{params.stage}: warning: n_base {n_base:,} has no real-addition cell, so fit_equivalence leaves it "
                  "out (its synthetic cells still train for the accuracy curves)", flush=True)
        skipped = [d["ratio"] for d in dropped if d["setting"] == "real"]
        epochs = epochs_for(n_base, cfg.epochs_by_base)
        train_cfg = cfg.train_recipe(epochs)
        test = to_device_tensors(data.x_test, data.y_test, device)
        jobs = []
        for cell in cells:
            for trial in range(params.trials):
                seed = trial_seed(params.seed, trial)
                x, y = cell_training_set(cell, data.x_train, data.y_train, base_idx, pools, data.num_classes, seed)
                torch.manual_seed(derive_seed(seed, "init"))
                model = build_classifier(spec_for_data(cfg.classifier.model, x, data.num_classes, data.name))
                jobs.append(Job(cell.name, cell.params(), trial, seed, model, to_device_tensors(x, y, device), len(y), train_cfg))
        rows = run_jobs(run, params.stage, jobs, score, device=device, evals={"test": test})
        summary = summarise(rows, ("accuracy", "top5"))
        atomic_write_json(paths.out, {"rows": rows, "cells": summary, "epochs": epochs,
                                      "skipped_real_ratios": skipped, "dropped_cells": dropped})
        run.log_metrics({"cells": len(rows), "epochs": epochs})
        run.record_cells(summary, ("accuracy",))
        run.log_artifact(paths.out)


if __name__ == "__main__":
    run_main(main)
