"""The one grid runner: train a grid of classifiers over trials, log a child run per (cell, trial), summarise.

Every result-producing stage (GaFi's CAS cells and search points, the Equivalence grid, Real-Fake's tables,
the reference classifier) builds one :class:`Job` per (cell, trial) and calls :func:`run_jobs`, which

1. trains jobs that share a recipe and a training-set size together (:func:`train_classifiers`: stacked
   when the architecture allows, so k trials cost far less than k runs),
2. scores each trained job with the stage's ``score`` function (a dict of numbers),
3. logs one MLflow child run per job named ``<stage>/<cell>/trial=<i>`` with the cell's params, the trial
   and its seed, and returns one row per job.

:func:`summarise` turns those rows into one row per cell: each metric's mean, its 95 % interval and the
per-trial values (kept so that reports can pair cells trial by trial, :func:`synthgap.stats.compare`).
The seed of trial ``i`` is :func:`synthgap.seeding.trial_seed` everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from synthgap.config import TrainConfig
from synthgap.stats import estimate
from synthgap.train.classifier import TrainResult, TrainSet, train_classifiers


@dataclass
class Job:
    """One classifier of a grid: cell ``cell`` (params ``params``), trial ``trial`` with seed ``seed``."""

    cell: str
    params: dict[str, Any]
    trial: int
    seed: int
    model: torch.nn.Module
    train_set: TrainSet
    size: int  # training images per epoch (jobs are trained together only when equal)
    cfg: TrainConfig
    result: TrainResult | None = None  # set by run_jobs


Score = Callable[[Job, TrainResult], dict[str, float]]


def run_jobs(run, stage: str, jobs: list[Job], score: Score, *, device, evals: dict, eval_every_epoch: bool = False,
             state_path: Path | None = None, on_epoch=None) -> list[dict]:
    """Train every job (together where possible), score it and log its child run; one row per job (the
    trained model stays in ``job.model``, its history in ``job.result``). ``state_path``: resumable state of
    each group of jobs trained together (a suffix per group); ``on_epoch(records)`` as in train_classifiers."""
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((json.dumps(job.cfg.model_dump(mode="json"), sort_keys=True), job.size), []).append(i)
    for g, members in enumerate(groups.values()):
        first = jobs[members[0]]
        path = state_path if state_path is None or len(groups) == 1 else state_path.with_name(f"{state_path.stem}-g{g}.pt")
        desc = stage if len({jobs[i].cell for i in members}) > 1 else f"{stage}/{first.cell}"
        trained = train_classifiers([jobs[i].model for i in members], [jobs[i].train_set for i in members], first.cfg,
                                    seeds=[jobs[i].seed for i in members], device=device, evals=evals,
                                    eval_every_epoch=eval_every_epoch, desc=desc, state_path=path, on_epoch=on_epoch)
        for i, result in zip(members, trained):
            jobs[i].result = result
    rows = []
    for i, job in enumerate(jobs):
        metrics = score(job, job.result)
        with run.child(f"{stage}/{job.cell}/trial={job.trial}", {**job.params, "trial": job.trial, "trial_seed": job.seed}) as child:
            child.log_metrics(metrics)
        rows.append({"cell": job.cell, **job.params, "trial": job.trial, "trial_seed": job.seed, **metrics,
                     "mlflow_run_id": child.run_id})
    return rows


def summarise(rows: list[dict], metrics: tuple[str, ...]) -> list[dict]:
    """One row per cell (in first-seen order): the keys shared by its trials (its params), and for each of
    ``metrics`` the mean over trials, ``<metric>_ci95`` and ``<metric>_trials`` (the per-trial values in
    trial order, for paired comparisons). Other numbers that vary across trials are averaged."""
    cells: dict[str, list[dict]] = {}
    for row in rows:
        cells.setdefault(row["cell"], []).append(row)
    out = []
    for members in cells.values():
        members = sorted(members, key=lambda r: r["trial"])
        summary: dict[str, Any] = {"trials": len(members)}
        for key in members[0]:
            if key in ("trial", "trial_seed", "mlflow_run_id", "trials"):
                continue
            values = [r.get(key) for r in members]
            if key in metrics:
                est = estimate([float(v) for v in values])
                summary |= {key: est.mean, f"{key}_ci95": est.as_dict()["ci95"], f"{key}_trials": [float(v) for v in values]}
            elif all(v == values[0] for v in values):
                summary[key] = values[0]
            elif all(isinstance(v, (int, float)) for v in values):
                summary[key] = sum(values) / len(values)
        out.append(summary)
    return out
