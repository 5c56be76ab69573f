"""Helpers shared by the stage scripts: params of the GaFi stages and the argument of foreach stages."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from synthgap.config import StageParams, load_stage_params
from synthgap.errors import UserError
from synthgap.paths import workspace_root


def generator_seed_argument(allowed: tuple[int, ...]) -> int:
    """The generator seed a ``foreach`` stage passes as its first argument (``train_generator@<seed>``)."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args or not args[0].lstrip("-").isdigit():
        raise UserError("missing generator seed argument", "run it as `python -m stages.<stage> <generator seed>`")
    seed = int(args[0])
    if seed not in allowed:
        raise UserError(f"generator seed {seed} is not in gafi.generator_seeds {list(allowed)}", "add it there first")
    return seed


def gafi_params(stage: str) -> tuple[StageParams, Path]:
    """The shared keys and the ``gafi`` section, for a GaFi stage run from the workspace."""
    workspace = workspace_root()
    return load_stage_params(stage, workspace / "params.yaml", section="gafi"), workspace


def gafi_foreach_params(stage: str) -> tuple[StageParams, int, Path]:
    """Like :func:`gafi_params` for a stage run once per generator seed; the run is named ``<stage>@<seed>``."""
    params, workspace = gafi_params(stage)
    seed = generator_seed_argument(params.section.generator_seeds)
    return replace(params, stage=f"{stage}@{seed}"), seed, workspace


def run_gafi_grid(stage: str, make_cells) -> dict | None:
    """Run a non-foreach GaFi grid stage: ``make_cells(ctx, reports)`` lists the cells; the rows and the best
    cell go to ``reports/gafi/<stage>.json`` and to one parent MLflow run with a child run per cell."""
    from synthgap.gafi.pipeline import GafiContext, run_grid, write_grid
    from synthgap.runtime import resolve_device
    from synthgap.tracking import StageRun

    params, workspace = gafi_params(stage)
    reports = workspace / "reports" / "gafi"
    with StageRun(params, experiment="gafi") as run:
        ctx = GafiContext(params, workspace, resolve_device(params.device))
        cells = make_cells(ctx, reports)
        if not cells:
            write_grid(reports / f"{stage}.json", [], None)
            print(f"{stage}: nothing to run")
            return None
        best = run_grid(ctx, run, stage, cells, reports / f"{stage}.json")
        print(f"{stage}: best {best['name']}, CAS {best['cas']:.2f}")
        return best
