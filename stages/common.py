"""Helpers shared by the stage scripts: params of the GaFi stages and the argument of foreach stages."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from synthgap.config import StageParams, load_stage_params
from synthgap.errors import UserError
from synthgap.paths import workspace_root


def foreach_argument(what: str, key: str, allowed: tuple[int, ...]) -> int:
    """The item a ``foreach`` stage gets as its first argument (``train_generator@<seed>``, ``augment@<n_base>``),
    which must be one of ``allowed`` (the params list ``key``)."""
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args or not args[0].lstrip("-").isdigit():
        raise UserError(f"missing {what} argument", f"run it as `python -m stages.<stage> <{what}>`")
    item = int(args[0])
    if item not in allowed:
        raise UserError(f"{what} {item} is not in {key} {list(allowed)}", "add it there first")
    return item


def gafi_params(stage: str) -> tuple[StageParams, Path]:
    """The shared keys and the ``gafi`` section, for a GaFi stage run from the workspace."""
    workspace = workspace_root()
    return load_stage_params(stage, workspace / "params.yaml", section="gafi"), workspace


def realfake_params(stage: str) -> tuple[StageParams, Path]:
    """The shared keys and the ``realfake`` section, for a Real-Fake stage run from the workspace."""
    workspace = workspace_root()
    return load_stage_params(stage, workspace / "params.yaml", section="realfake"), workspace


def gafi_foreach_params(stage: str) -> tuple[StageParams, int, Path]:
    """Like :func:`gafi_params` for a stage run once per generator seed; the run is named ``<stage>@<seed>``."""
    params, workspace = gafi_params(stage)
    seed = foreach_argument("generator seed", "gafi.generator_seeds", params.section.generator_seeds)
    return replace(params, stage=f"{stage}@{seed}"), seed, workspace


def run_gafi_grid(stage: str, make_cells, extra=None) -> dict | None:
    """Run a non-foreach GaFi grid stage: ``make_cells(ctx, reports)`` lists the cells; the rows and the best
    cell go to ``reports/gafi/<stage>.json`` and to one parent MLflow run with a child run per cell.
    ``extra(ctx, reports, run)``, if given, returns more keys for that JSON (computed before the grid)."""
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
        more = extra(ctx, reports, run) if extra else {}
        best = run_grid(ctx, run, stage, cells, reports / f"{stage}.json", **more)
        print(f"{stage}: best {best['cell']}, CAS {best['cas']:.2f}")
        return best


def equivalence_foreach_params(stage: str) -> tuple[StageParams, int, Path]:
    """Params of an Equivalence stage run once per base size (named ``<stage>@<n_base>``)."""
    workspace = workspace_root()
    params = load_stage_params(stage, workspace / "params.yaml", section="equivalence")
    n_base = foreach_argument("base size", "equivalence.base_sizes", params.section.base_sizes)
    return replace(params, stage=f"{stage}@{n_base}"), n_base, workspace


def base_subset(workspace: Path, n_base: int, merge_train_val: bool):
    """The processed data (validation folded into train with ``equivalence.merge_train_val``) and the indices
    of its base subset of size ``n_base``."""
    from synthgap.data import load_processed

    data = load_processed(workspace / "data" / "processed")
    if merge_train_val:
        data = data.with_val_in_train()
    try:
        return data, data.base_subset(n_base)
    except UserError as err:
        raise UserError(f"equivalence.base_sizes: {err.what}", err.fix) from None
