"""Run a paper's preset as one DVC experiment::

    python -m synthgap.preset cifar10                 # dvc exp run --name cifar10 -S ... (the whole graph)
    python -m synthgap.preset cifar10 --queue         # queued, run later with `dvc queue start`
    python -m synthgap.preset cifar10 report_gafi     # only what GaFi's tables need
    python -m synthgap.preset cifar10 --print         # show the command, run nothing

``params/<name>.yaml`` is a complete params file. :func:`overrides` turns its difference from ``params.yaml``
into DVC's ``-S`` overrides (Hydra's override grammar: ``key=value``, ``+key=value`` for a key params.yaml
lacks, ``~key`` for one the preset lacks), and the command runs ``dvc exp run --name <name> -S ...`` with
every other argument passed through. So a preset is an experiment like any other: ``dvc exp show`` lists
it, ``dvc exp apply`` / ``git checkout params.yaml`` go back, ``params.yaml`` stays the one file the stages
read, and its comments survive. Before anything runs, the overrides are applied to a copy of ``params.yaml``
with DVC's own code and the result must equal the preset, so a value the grammar cannot carry stops here.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from synthgap.config import read_params_file
from synthgap.errors import UserError, run_main
from synthgap.paths import workspace_root

_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*$")


def value(v) -> str:
    """``v`` in Hydra's override grammar (what DVC's ``-S key=<value>`` parses back to ``v``)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        if "${" in v:
            raise UserError(f"preset value {v!r} contains '${{', which DVC's -S would read as an interpolation",
                            "write it without '${' or copy the preset over params.yaml by hand")
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list):
        return "[" + ",".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        for k in v:
            if not (isinstance(k, str) and _ID.match(k)):
                raise UserError(f"preset key {k!r} is not a plain name that DVC's -S can set",
                                "rename it or copy the preset over params.yaml by hand")
        return "{" + ",".join(f"{k}:{value(x)}" for k, x in v.items()) + "}"
    raise UserError(f"preset value {v!r} of type {type(v).__name__} cannot be passed to DVC's -S",
                    "use numbers, strings, lists and mappings only")


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def overrides(current: dict, preset: dict, prefix: str = "") -> list[str]:
    """The ``-S`` overrides that turn ``current`` into ``preset``: only what differs, at the deepest level
    where both sides are mappings."""
    out = []
    for key, new in preset.items():
        path = f"{prefix}{key}"
        if key not in current:
            out.append(f"+{path}={value(new)}")
        elif isinstance(new, dict) and new and isinstance(current[key], dict) and current[key]:
            out += overrides(current[key], new, f"{path}.")
        elif not _same(new, current[key]):
            out.append(f"{path}={value(new)}")
    out += [f"~{prefix}{key}" for key in current if key not in preset]
    return out


def check(params_file: Path, preset: dict, sets: list[str]) -> None:
    """Apply ``sets`` to a copy of ``params_file`` with DVC's own code; the result must equal ``preset``."""
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_file, copy)
        apply_overrides(copy, sets)
        result = read_params_file(copy)
    if result != preset:
        wrong = sorted(k for k in set(result) | set(preset) if result.get(k) != preset.get(k))
        raise UserError(f"DVC's -S would not reproduce the preset exactly (sections {', '.join(wrong)})",
                        "copy the preset over params.yaml by hand and run `dvc repro`")


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0].startswith("-"):
        raise UserError("no preset named", "run `python -m synthgap.preset <name> [dvc exp run options]` with "
                        "a name from params/ (e.g. cifar10)")
    name, rest = argv[0], [a for a in argv[1:] if a not in ("--print", "--debug")]
    workspace = workspace_root()
    params_file = workspace / "params.yaml"
    preset_file = workspace / "params" / f"{name}.yaml"
    if not preset_file.is_file():
        known = ", ".join(sorted(p.stem for p in (workspace / "params").glob("*.yaml")))
        raise UserError(f"no preset {preset_file.relative_to(workspace)}", f"use one of: {known}")
    preset = read_params_file(preset_file)
    sets = overrides(read_params_file(params_file), preset)
    check(params_file, preset, sets)
    command = ["dvc", "exp", "run", "--name", name, *[a for s in sets for a in ("-S", s)], *rest]
    print(f"preset {name}: {len(sets)} params differ from params.yaml", file=sys.stderr)
    print(" ".join(command[:5] + [f"-S {s!r}" for s in sets[:3]] + ["..."] * (len(sets) > 3) + rest),
          file=sys.stderr)
    if "--print" in argv:
        print("\n".join(sets))
        return
    raise SystemExit(subprocess.call(command, cwd=workspace))


if __name__ == "__main__":
    run_main(main)
