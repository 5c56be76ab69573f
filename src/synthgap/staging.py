"""All-or-nothing stage outputs, and the checks that let a stage fail before its compute instead of after.

A stage's ``main`` runs inside :func:`transaction` (``synthgap.errors.run_main`` opens it). Every file written
through the ``synthgap.paths.atomic_*`` helpers inside the workspace first lands in a private staging folder,
``.synthgap/staging/<pid>/``, which mirrors the workspace; :func:`commit` moves them all into place once the
stage has succeeded (``StageRun`` commits just before it marks its MLflow run FINISHED). A failure, an
interrupt or a fault discards them, so a failed run never leaves new weights beside old metrics. Written in
place at once, because they must outlive the failure they exist for:

- resumable training state (anything under ``.synthgap/``);
- folders a stage declares with :func:`write_through`: persistent DVC outputs that a resumed run continues
  (a generator's epoch snapshots).

A stage that reads back a file it wrote finds it with :func:`current`. Training loops hand their finished
state to :func:`remove_after_commit`, so a stage that fails after its training resumes as finished. Staging folders left by killed
processes are removed when the next stage starts.

:func:`preflight` checks, before any compute, that the stage's declared outputs (``dvc.yaml``) are writable,
that the disk has room for them (their size in ``dvc.lock`` plus a margin) and that the file-size limit
(``ulimit -f``) admits them.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from synthgap.errors import UserError

FREE_MARGIN = 64 * 2**20  # bytes of free disk a stage needs beyond the size of its last outputs
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass
class _Transaction:
    workspace: Path
    folder: Path
    staged: dict[Path, Path] = field(default_factory=dict)  # target -> its staged copy
    through: list[Path] = field(default_factory=list)
    obsolete: list[Path] = field(default_factory=list)  # removed once the outputs are in place


_active: _Transaction | None = None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def transaction(workspace: Path) -> Iterator[None]:
    """Stage the outputs written in the block; commit them if it succeeds, discard them if not."""
    global _active
    if _active is not None:  # nested: the outer transaction decides
        yield
        return
    root = workspace.resolve() / ".synthgap" / "staging"
    if root.is_dir():
        for old in root.iterdir():
            if old.name.isdigit() and not process_alive(int(old.name)):
                shutil.rmtree(old, ignore_errors=True)
    _active = _Transaction(workspace.resolve(), root / str(os.getpid()))
    try:
        yield
        commit()
    finally:
        shutil.rmtree(_active.folder, ignore_errors=True)
        _active = None


def write_through(folder: Path) -> None:
    """Write files under ``folder`` in place during this transaction (a persistent output a resumed run
    continues)."""
    if _active is not None:
        _active.through.append(Path(folder).resolve())


def redirect(target: Path) -> Path:
    """Where a write of ``target`` goes now: its staged copy inside a transaction, else ``target`` itself."""
    if _active is None:
        return target
    resolved = Path(target).resolve()
    try:
        relative = resolved.relative_to(_active.workspace)
    except ValueError:  # outside the workspace (e.g. an absolute data path): not a stage output
        return target
    if relative.parts[:1] == (".synthgap",) or any(resolved.is_relative_to(p) for p in _active.through):
        return target
    staged = _active.folder / relative
    _active.staged[resolved] = staged
    return staged


def remove_after_commit(path: Path) -> None:
    """Delete ``path`` (a finished training's state) once the stage's outputs are in place, so a stage that
    fails after its training resumes as finished; at once outside a stage."""
    if _active is None:
        Path(path).unlink(missing_ok=True)
    else:
        _active.obsolete.append(Path(path))


def current(path: Path) -> Path:
    """The file a reader should open for ``path``: the staged copy if this stage wrote one, else ``path``."""
    if _active is not None:
        staged = _active.staged.get(Path(path).resolve())
        if staged is not None and staged.exists():
            return staged
    return Path(path)


def commit() -> None:
    """Move every staged file into place: first check that every destination folder takes them, then move."""
    if _active is None:
        return
    pending = [(target, staged) for target, staged in _active.staged.items() if staged.exists()]
    for target, _ in pending:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_failed(target, err) from None
        if not os.access(target.parent, os.W_OK):
            raise write_failed(target, OSError(errno.EACCES, os.strerror(errno.EACCES)))
    for target, staged in pending:
        os.replace(staged, target)
    _active.staged.clear()
    for path in _active.obsolete:
        path.unlink(missing_ok=True)
    _active.obsolete.clear()


def write_failed(target: Path, err: OSError) -> UserError:
    """The one line for a write the environment refused (disk full, file too large, read-only folder)."""
    return UserError(
        f"could not write {target} ({os.strerror(err.errno) if err.errno else err})",
        "free disk space, raise the file-size limit (ulimit -f) or make the folder writable, then rerun the "
        "stage; no output of this stage was replaced, and training resumes from its last saved state",
    )


def refused_write(err: BaseException, tmp: Path | None) -> OSError | None:
    """The environment's refusal behind ``err`` raised while writing ``tmp``, if that is what it is: an
    OSError with a disk or permission errno, or any error (torch's zip writer reports a short write as a
    RuntimeError) while ``tmp`` has reached the file-size limit or the disk is full."""
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        return err
    if tmp is None or not tmp.exists():
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit - 2**16:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    if shutil.disk_usage(tmp.parent).free < 2**20:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


# ------------------------------------------------------------------------------------------- before compute
def _load_yaml(path: Path) -> dict:
    import yaml  # PyYAML's C loader: a tenth of ruamel's time on a 3,000-line dvc.lock

    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def _dvc_files(workspace: Path, other: str | None = None) -> tuple[dict, dict] | None:
    """``dvc.yaml``'s stages and the YAML file ``other`` (``{}`` where it does not exist) in ``workspace``;
    None when one cannot be read."""
    import yaml

    try:
        stages = _load_yaml(workspace / "dvc.yaml").get("stages", {})
        extra = _load_yaml(workspace / other) if other is not None and (workspace / other).is_file() else {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return stages, extra


def _fill(text: str, stage: str, params: dict | None = None) -> str:
    """``text`` with ``${item}`` (the item of ``name@item``) and ``${<params.yaml key>}`` filled in as DVC fills them."""
    import re

    def value(match: re.Match) -> str:
        if match[1] == "item":
            return stage.partition("@")[2]
        node = params or {}
        for part in match[1].split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{\s*([\w.]+)\s*\}", value, text)


def _stage_spec(stages: dict, stage: str) -> dict:
    """The definition of ``name`` or ``name@item`` (a ``foreach`` stage's ``do``)."""
    spec = stages.get(stage.partition("@")[0]) or {}
    return spec.get("do", spec)


def declared_params(workspace: Path, stage: str) -> tuple[str, ...] | None:
    """The ``params.yaml`` keys ``dvc.yaml`` declares for ``stage`` (a key stands for its whole subtree);
    None without a ``dvc.yaml`` or an entry for the stage."""
    files = _dvc_files(workspace)
    if files is None or stage.partition("@")[0] not in files[0]:
        return None
    keys: list[str] = []
    for entry in _stage_spec(files[0], stage).get("params") or []:
        if isinstance(entry, dict):  # {params.yaml: [keys]} (or another params file, which stages do not read)
            keys += [str(k) for k in entry.get("params.yaml") or []]
        else:
            keys.append(str(entry))
    return tuple(dict.fromkeys(keys))


def is_declared(key: str, declared: tuple[str, ...]) -> bool:
    """``key`` (dotted) is one of ``declared`` or inside a declared subtree."""
    return any(key == d or key.startswith(d + ".") for d in declared)


def split_command(cmd: str) -> tuple[str, list[str]]:
    """A stage's command ``python -m stages <name> [args]`` (or ``python -m stages.<name> [args]``) as the
    module it runs, ``stages.<name>``, and its arguments; ``("", [])`` for any other command."""
    import shlex

    tokens = shlex.split(cmd)
    if len(tokens) < 3 or tokens[1] != "-m":
        return "", []
    if tokens[2] == "stages":
        return (f"stages.{tokens[3]}", tokens[4:]) if len(tokens) > 3 else ("", [])
    return tokens[2], tokens[3:]


def declared_command(workspace: Path, stage: str) -> list[str]:
    """The arguments ``dvc.yaml``'s ``cmd`` passes to ``stage`` (``name`` or ``name@item``), after
    ``python -m stages <name>``, with ``${item}`` and ``${<params.yaml key>}`` filled in as DVC fills them;
    empty without a ``dvc.yaml`` or an entry for the stage."""
    files = _dvc_files(workspace, "params.yaml")
    if files is None:
        return []
    stages, params = files
    return split_command(_fill(str(_stage_spec(stages, stage).get("cmd") or ""), stage, params))[1]


def declared_outputs(workspace: Path, stage: str) -> dict[Path, tuple[int, int]]:
    """The outputs ``dvc.yaml`` declares for ``stage`` (``name`` or ``name@item``), each with its size and
    mean file size in ``dvc.lock`` from the last run (0, 0 if unknown); empty without a ``dvc.yaml``."""
    files = _dvc_files(workspace, "dvc.lock")
    if files is None:
        return {}
    stages, lock = files[0], files[1].get("stages", {})
    spec = _stage_spec(stages, stage)
    sizes = {
        entry["path"]: (int(entry.get("size", 0)), int(entry.get("size", 0)) // max(1, int(entry.get("nfiles", 1))))
        for entry in (lock.get(stage) or {}).get("outs", [])
    }
    outputs: dict[Path, tuple[int, int]] = {}
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind) or []:
            path = next(iter(entry)) if isinstance(entry, dict) else str(entry)
            path = _fill(path, stage)
            outputs[workspace / path] = sizes.get(path, (0, 0))
    return outputs


def preflight(workspace: Path, stage: str) -> None:
    """Refuse to start a stage whose outputs could not be written: read-only folders, a full disk, a
    file-size limit below the size of its outputs."""
    outputs = declared_outputs(workspace, stage)
    for path in [*outputs, workspace / ".synthgap"]:
        existing = next(p for p in (path, *path.parents) if p.exists())
        if existing != path and not existing.is_dir():
            raise UserError(f"{stage} cannot write {path}: {existing} is a file where a folder belongs",
                            f"move {existing} away and rerun")
        folder = existing if existing.is_dir() else existing.parent
        if not os.access(folder, os.W_OK):
            raise UserError(f"{stage} cannot write {path}: {folder} is read-only",
                            f"make it writable (chmod u+w {folder}) and rerun")
    needed = sum(size for size, _ in outputs.values()) + FREE_MARGIN
    free = shutil.disk_usage(workspace).free
    if free < needed:
        raise UserError(f"only {free / 2**20:.0f} MiB free on the disk of {workspace}; {stage} needs about "
                        f"{needed / 2**20:.0f} MiB (its last outputs plus {FREE_MARGIN // 2**20} MiB)",
                        "free disk space and rerun")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    largest = max((per_file for _, per_file in outputs.values()), default=0)
    if limit != resource.RLIM_INFINITY and limit < largest:
        raise UserError(f"files may be at most {limit} bytes here (ulimit -f) but {stage} wrote files of about "
                        f"{largest} bytes last time", "raise the limit (ulimit -f unlimited) and rerun")
