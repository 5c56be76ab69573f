"""Repository-root discovery and atomic file writes.

Everything a stage writes goes through the ``atomic_*`` helpers: the data is written to a temporary file in
the destination folder and renamed over the target, so a crash never leaves a half-written output; inside a
stage the destination is a staging folder (``synthgap.staging``) and the outputs land together when the stage
has succeeded, so a failed run never replaces a good one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)
_DVC_TMP_WORKSPACE = os.sep + os.path.join(".dvc", "tmp", "exps") + os.sep


def item_path(folder: Path, item: int | str, suffix: str = "") -> Path:
    """The output of instance ``<stage>@<item>`` of a foreach stage in the folder that holds every instance's:
    ``<folder>/<item><suffix>`` (``models/train_generator/0``, ``reports/equivalence/augment/100.json``), so an
    instance has one name everywhere (stage, output, metrics file ``reports/metrics/<stage>@<item>.json``,
    MLflow run)."""
    return folder / f"{item}{suffix}"


def instance_of(path: Path) -> str:
    """The stage instance that wrote ``path``: ``<stage>@<item>`` for an :func:`item_path` output."""
    return f"{path.parent.name}@{path.name.removesuffix(''.join(path.suffixes))}"


def upstream(path: Path, stage: str) -> Path:
    """``path``, an output of ``stage`` that this stage reads; one line naming that stage when it is missing."""
    from synthgap.errors import UserError

    if not path.exists():
        raise UserError(f"{path} not found", f"run `dvc repro {stage}` first")
    return path


def read_upstream_json(path: Path, stage: str) -> Any:
    """The JSON ``stage`` wrote at ``path`` (see :func:`upstream`)."""
    return json.loads(upstream(path, stage).read_text())


def workspace_root() -> Path:
    """Where this stage reads params and writes its outputs: the nearest parent of the current directory
    holding ``.dvc`` or ``.git`` (DVC runs every stage command in the stage's folder), else the current
    directory. ``DVC_ROOT`` is not used here: a queued experiment runs in a temporary copy of the
    repository, but its worker may inherit the main repository's ``DVC_ROOT``."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".dvc").is_dir() or (candidate / ".git").exists():
            return candidate
    return here


def repo_root() -> Path:
    """The repository that shared state is anchored at: the MLflow database and artifacts, resumable
    training state and raw data. It is ``DVC_ROOT`` inside DVC (else the workspace), with a DVC
    temporary-workspace suffix removed: a queued ``dvc exp run`` executes in a copy under
    ``<root>/.dvc/tmp/exps/``, and what it shares must land in the real root."""
    base = os.environ.get("DVC_ROOT") or str(workspace_root())
    text = str(Path(base).resolve()) + os.sep
    if _DVC_TMP_WORKSPACE in text:
        return Path(text.split(_DVC_TMP_WORKSPACE)[0])
    return Path(text.rstrip(os.sep) or os.sep)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to where ``target`` goes; rename it there only if the block succeeds, and
    only in the main process of a distributed job (the others' copies are discarded: rank 0 writes). Inside
    a stage that is ``target``'s staged copy (``synthgap.staging``: the stage's outputs land together when it
    succeeds), else ``target`` itself. A write the environment refuses (disk full, ``ulimit -f``, read-only
    folder) ends as one UserError line."""
    from synthgap import staging

    final = Path(target)
    target = staging.redirect(final)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        yield tmp_path
        from synthgap.distributed import is_main

        if is_main():
            os.replace(tmp_path, target)
    except (OSError, RuntimeError) as err:
        refusal = staging.refused_write(err, tmp_path)
        if refusal is not None:
            raise staging.write_failed(final, refusal) from None
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_write_json(target: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npz(target: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def atomic_write_with(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``target`` (for figures, torch files, CSVs)."""
    with atomic_path(target) as tmp:
        write(tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_csv(target: str | os.PathLike, rows: list[dict]) -> None:
    """Rows of dicts as CSV; the columns are the union of the keys, in first-seen order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(target, buffer.getvalue())
