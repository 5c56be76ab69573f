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


def equivalence_foreach_params(stage: str) -> tuple[StageParams, int, Path]:
    """Params of an Equivalence stage run once per base size (named ``<stage>@<n_base>``)."""
    workspace = workspace_root()
    params = load_stage_params(stage, workspace / "params.yaml", section="equivalence")
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args or not args[0].isdigit():
        raise UserError("missing base size argument", f"run it as `python -m stages.{stage} <n_base>`")
    n_base = int(args[0])
    if n_base not in params.section.base_sizes:
        raise UserError(f"base size {n_base} is not in equivalence.base_sizes {list(params.section.base_sizes)}",
                        "add it there first")
    return replace(params, stage=f"{stage}@{n_base}"), n_base, workspace


def base_subset(workspace: Path, n_base: int):
    """The processed data and the indices of its base subset of size ``n_base``."""
    from synthgap.data import load_processed

    data = load_processed(workspace / "data" / "processed")
    if n_base not in data.base_subsets:
        raise UserError(f"no base subset of size {n_base} in data/processed (it has {sorted(data.base_subsets)})",
                        "add the size to prepare_data.base_sizes and rerun prepare_data")
    return data, data.base_subsets[n_base]
