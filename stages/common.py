"""Helpers shared by the stage scripts: the command line dvc.yaml gives them (the item of a foreach stage,
the paths it reads and writes), and the params of the GaFi and Equivalence stages."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from synthgap.config import StageParams, load_stage_params
from synthgap.errors import UserError
from synthgap.paths import workspace_root
from synthgap.staging import declared_command


def split_arguments(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """A command line split into positional arguments and ``--name value`` options (``--debug`` is
    ``run_main``'s flag, not an option)."""
    positional, options, rest = [], {}, list(argv)
    while rest:
        token = rest.pop(0)
        if token == "--debug":
            continue
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            if not eq:
                if not rest or rest[0].startswith("--"):
                    raise UserError(f"option --{name} has no value", f"pass it as --{name} <path>")
                value = rest.pop(0)
            options[name] = value
        else:
            positional.append(token)
    return positional, options


def stage_paths(stage: str, *names: str) -> SimpleNamespace:
    """The paths ``stage`` (``name`` or ``name@item``) reads and writes, as dvc.yaml passes them on its
    command line (``--data data/processed``), absolute in the workspace: ``paths.data``. dvc.yaml is the one
    place that names them, beside the deps and outs that declare them. A stage run by hand without options
    (``python -m stages.augment 100``) takes them from its ``cmd`` there."""
    workspace = workspace_root()
    _, options = split_arguments(sys.argv[1:])
    if not options:
        _, options = split_arguments(declared_command(workspace, stage))
    missing = [name for name in names if name not in options]
    if missing:
        raise UserError(f"{stage} needs --{missing[0]} <path> on its command line",
                        f"run it as dvc.yaml's cmd does: `dvc repro {stage}`")
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise UserError(f"{stage} has no option --{unknown[0]}", "it takes " + ", ".join(f"--{n}" for n in names))
    return SimpleNamespace(**{name.replace("-", "_"): workspace / options[name] for name in names})


def foreach_argument(what: str, key: str, allowed: tuple[int, ...]) -> int:
    """The item a ``foreach`` stage gets as its first argument (``train_generator@<seed>``, ``augment@<n_base>``),
    which must be one of ``allowed`` (the params list ``key``)."""
    args, _ = split_arguments(sys.argv[1:])
    if not args or not args[0].lstrip("-").isdigit():
        raise UserError(f"missing {what} argument", f"run it as `python -m stages.<stage> <{what}>`")
    item = int(args[0])
    if item not in allowed:
        raise UserError(f"{what} {item} is not in {key} {list(allowed)}", "add it there first")
    return item


def gafi_params(stage: str, *paths: str) -> tuple[StageParams, SimpleNamespace]:
    """The shared keys and the ``gafi`` section of a GaFi stage, and its ``paths`` (:func:`stage_paths`)."""
    params = load_stage_params(stage, workspace_root() / "params.yaml", section="gafi")
    return params, stage_paths(stage, *paths)


def realfake_params(stage: str, *paths: str) -> tuple[StageParams, SimpleNamespace]:
    """The shared keys and the ``realfake`` section of a Real-Fake stage, and its ``paths``."""
    params = load_stage_params(stage, workspace_root() / "params.yaml", section="realfake")
    return params, stage_paths(stage, *paths)


def gafi_foreach_params(stage: str, *paths: str) -> tuple[StageParams, int, SimpleNamespace]:
    """Like :func:`gafi_params` for a stage run once per generator seed; the run is named ``<stage>@<seed>``."""
    params = load_stage_params(stage, workspace_root() / "params.yaml", section="gafi")
    seed = foreach_argument("generator seed", "gafi.generator_seeds", params.section.generator_seeds)
    params = replace(params, stage=f"{stage}@{seed}")
    return params, seed, stage_paths(params.stage, *paths)


def equivalence_params(stage: str, *paths: str) -> tuple[StageParams, SimpleNamespace]:
    """The shared keys and the ``equivalence`` section of an Equivalence stage run once, and its ``paths``."""
    params = load_stage_params(stage, workspace_root() / "params.yaml", section="equivalence")
    return params, stage_paths(stage, *paths)


def equivalence_foreach_params(stage: str, *paths: str) -> tuple[StageParams, int, SimpleNamespace]:
    """Params of an Equivalence stage run once per base size (named ``<stage>@<n_base>``), and its ``paths``."""
    params = load_stage_params(stage, workspace_root() / "params.yaml", section="equivalence")
    n_base = foreach_argument("base size", "equivalence.base_sizes", params.section.base_sizes)
    params = replace(params, stage=f"{stage}@{n_base}")
    return params, n_base, stage_paths(params.stage, *paths)


def run_gafi_grid(stage: str, make_cells, extra=None, inputs: tuple[str, ...] = (), headline: bool = False) -> dict | None:
    """Run a non-foreach GaFi grid stage: ``make_cells(ctx, paths)`` lists the cells; the rows and the best
    cell go to ``paths.out`` (JSON) and to one parent MLflow run with a child run per cell. The stage's
    command line names ``--data``, ``--reference``, ``--generators``, ``--out`` and the ``inputs`` the cells
    read. ``extra(ctx, paths, run)``, if given, returns more keys for the JSON (computed before the grid).
    ``headline``: the stage's cells are headline cells, with ``gafi.headline_trials`` trials."""
    from synthgap.gafi.pipeline import GafiContext, run_grid, write_grid
    from synthgap.runtime import resolve_device
    from synthgap.tracking import StageRun

    params, paths = gafi_params(stage, "data", "reference", "generators", *inputs, "out")
    with StageRun(params, experiment="gafi") as run:
        ctx = GafiContext(params, paths.data, paths.reference, paths.generators, resolve_device(params.device),
                          trials=params.section.headline_trials if headline else None)
        cells = make_cells(ctx, paths)
        if not cells:
            write_grid(paths.out, [], None)
            print(f"{stage}: nothing to run")
            return None
        more = extra(ctx, paths, run) if extra else {}
        best = run_grid(ctx, run, stage, cells, paths.out, **more)
        print(f"{stage}: best {best['cell']}, CAS {best['cas']:.2f}")
        return best


def base_subset(processed: Path, n_base: int, merge_train_val: bool):
    """The processed data in folder ``processed`` (validation folded into train with
    ``equivalence.merge_train_val``) and the indices of its base subset of size ``n_base``."""
    from synthgap.data import load_processed

    data = load_processed(processed)
    if merge_train_val:
        data = data.with_val_in_train()
    try:
        return data, data.base_subset(n_base)
    except UserError as err:
        raise UserError(f"equivalence.base_sizes: {err.what}", err.fix) from None
