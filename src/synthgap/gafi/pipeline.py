"""What the GaFi stages share: the grid cell, the loaded context, and running one cell as a child run.

A :class:`Cell` is one CAS configuration: K members (generator seed, checkpoint epoch, stddev, threshold),
a recycle period and a name. :func:`run_grid` trains every cell's CAS classifier once per trial through the one grid runner
(:mod:`synthgap.grid`) and writes one row per cell (mean, 95 % interval, per-trial values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from synthgap.config import GafiConfig
from synthgap.data import ProcessedData, load_processed
from synthgap.errors import UserError
from synthgap.gafi.cas import GeneratorChoice, cas_model, cas_scores, cas_source
from synthgap.grid import Job, run_jobs, summarise
from synthgap.models import check_compatible, load_classifier
from synthgap.models.biggan import Generator
from synthgap.paths import atomic_write_json, instance_of, item_path, read_upstream_json
from synthgap.seeding import trial_seed
from synthgap.train.classifier import to_device_tensors
from synthgap.train.gan import checkpoint_path, list_checkpoints, load_generator


@dataclass(frozen=True)
class Member:
    generator_seed: int
    checkpoint: int
    stddev: float = 1.0
    threshold: float | None = None  # None: no filtering


@dataclass(frozen=True)
class Cell:
    name: str
    members: tuple[Member, ...]
    recycle: int | None  # None: one set for the whole training

    def params(self) -> dict:
        """Flat params of the child run (single values for one generator, lists for several)."""
        def pick(field: str):
            values = [getattr(m, field) for m in self.members]
            return values[0] if len(values) == 1 else values

        return {
            "num_generators": len(self.members),
            "generator_seed": pick("generator_seed"),
            "checkpoint": pick("checkpoint"),
            "stddev": pick("stddev"),
            "threshold": "none" if pick("threshold") is None else pick("threshold"),
            "recycle": "none" if self.recycle is None else self.recycle,
        }


def read_choice(path: Path) -> dict:
    """The ``best`` entry a search stage wrote at ``path`` (an :func:`~synthgap.paths.item_path` output: each
    stage reads the previous stage's choice from disk)."""
    return read_upstream_json(path, instance_of(path))["best"]


def write_grid(path: Path, rows: list[dict], best: dict | None, **extra) -> None:
    atomic_write_json(path, {"rows": rows, "best": best, **extra})


class GafiContext:
    """What every CAS cell of a GaFi stage needs: the processed data (folder ``data``), the sample filter (the
    reference classifier's file ``reference``), and the generators (``generators``: train_generator's folder,
    one :func:`~synthgap.paths.item_path` subfolder of checkpoints per generator seed)."""

    def __init__(self, params, data: Path, reference: Path, generators: Path, device, trials: int | None = None):
        self.cfg: GafiConfig = params.section
        self.seed = params.seed
        self.trials = trials or params.trials  # the headline cells' own count (gafi.headline_trials), else the shared one
        self.generators = generators
        self.device = device
        self.data: ProcessedData = load_processed(data)
        self.filter = load_classifier(reference, device).eval()
        check_compatible(self.filter, self.data.num_classes, self.data.image_shape, self.data.name, reference)
        self.evals = {s: to_device_tensors(*self.data.split(s), device) for s in ("val", "test") if len(self.data.split(s)[1])}
        if self.cfg.select_on == "val" and "val" not in self.evals:
            raise UserError("gafi.select_on is val but the validation split is empty",
                            "set prepare_data.val_size > 0, or gafi.select_on: test")
        self.synthetic_size = self.cfg.synthetic_size or len(self.data.y_train)
        self._generators: dict[tuple[int, int], Generator] = {}

    def saved(self, generator_seed: int) -> dict[int, Path]:
        saved = list_checkpoints(item_path(self.generators, generator_seed))
        if not saved:
            raise UserError(f"no generator checkpoints for seed {generator_seed}",
                            f"run `dvc repro train_generator@{generator_seed}` first")
        return saved

    def checkpoints(self, generator_seed: int) -> list[int]:
        """Checkpoint epochs to search: ``gafi.search.checkpoints`` or every saved one."""
        saved = self.saved(generator_seed)
        wanted = self.cfg.search.checkpoints or tuple(saved)
        missing = [e for e in wanted if e not in saved]
        if missing:
            raise UserError(f"gafi.search.checkpoints {missing} were not saved (saved: {sorted(saved)})",
                            "choose saved epochs or change gafi.gan.checkpoint_every")
        return sorted(wanted)

    def last_checkpoint(self, generator_seed: int) -> int:
        return max(self.saved(generator_seed))

    def last_member(self, stddev: float = 1.0, threshold: float | None = None) -> Member:
        """The first generator's last checkpoint: the subject of the ablations (no checkpoint search)."""
        seed = self.cfg.generator_seeds[0]
        return Member(seed, self.last_checkpoint(seed), stddev, threshold)

    def generator(self, generator_seed: int, epoch: int) -> Generator:
        key = (generator_seed, epoch)
        if key not in self._generators:
            path = checkpoint_path(item_path(self.generators, generator_seed), epoch)
            if not path.is_file():
                raise UserError(f"generator checkpoint {path} not found", f"run `dvc repro train_generator@{generator_seed}`")
            generator = load_generator(path, self.device)
            if generator.spec.num_classes != self.data.num_classes or generator.spec.image_size != self.data.image_shape[0]:
                raise UserError(f"{path} was trained for another dataset ({generator.spec.dataset})",
                                "rerun train_generator for this dataset")
            self._generators[key] = generator
        return self._generators[key]

    def jobs(self, cells: list[Cell]) -> list[Job]:
        """One CAS job per (cell, trial); trial i of every cell uses the seed ``trial_seed(run seed, i)``."""
        jobs = []
        for cell in cells:
            choices = [GeneratorChoice(self.generator(m.generator_seed, m.checkpoint), m.stddev, m.threshold)
                       for m in cell.members]
            for trial in range(self.trials):
                seed = trial_seed(self.seed, trial)
                source = cas_source(choices, self.filter, num_classes=self.data.num_classes,
                                    synthetic_size=self.synthetic_size, recycle=cell.recycle, seed=seed,
                                    max_rounds=self.cfg.filter_rounds, batch_size=self.cfg.filter_batch_size)
                model = cas_model(self.cfg.cas, source, self.data.num_classes, seed)
                jobs.append(Job(cell.name, {**cell.params(), "members": [asdict(m) for m in cell.members]}, trial, seed,
                                model, source, self.synthetic_size, self.cfg.cas.train))
        return jobs

    def score(self, job: Job, result) -> dict:
        score, cas = cas_scores(result, self.cfg.select_on)
        finals = {k: v for k, v in result.final.items() if not k.endswith("per_class")}
        return {"score": score, "cas": cas, **job.train_set.stats(), **finals}


METRICS = ("score", "cas", "val_top1", "test_top1")


def best_row(rows: list[dict]) -> dict:
    """Highest mean score over trials; ties go to the earlier row (grids are listed in the paper's order)."""
    return max(rows, key=lambda row: (row["score"], -rows.index(row)))


def run_grid(ctx: GafiContext, run, stage: str, cells: list[Cell], out: Path, **extra) -> dict:
    """Train every cell over ``trials`` (child run per cell and trial), write ``out`` (one row per cell with
    means, 95 % intervals and per-trial values; the best cell by mean score) and log the best on the parent."""
    trials = run_jobs(run, stage, ctx.jobs(cells), ctx.score, device=ctx.device, evals=ctx.evals,
                      eval_every_epoch=ctx.cfg.select_on == "test")
    rows = summarise(trials, METRICS)
    best = best_row(rows)
    write_grid(out, rows, best, select_on=ctx.cfg.select_on, trials=trials, **extra)
    run.log_metrics({"best_score": best["score"], "best_cas": best["cas"], "cells": len(rows)})
    run.record_cells(rows, ("cas", "score"))
    run.log_artifact(out)
    return best
