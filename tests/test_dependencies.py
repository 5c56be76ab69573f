"""Dependencies that cannot go stale: every stage's ``deps`` in dvc.yaml cover every file of ``src/synthgap``
and ``stages`` its command imports, directly or not (found by reading the imports, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = {"synthgap": REPO / "src" / "synthgap", "stages": REPO / "stages"}


def module_file(name: str) -> Path | None:
    """The file of module ``name`` (a package's ``__init__.py``) if it is one of ours."""
    top, *rest = name.split(".")
    if top not in PACKAGES:
        return None
    base = PACKAGES[top].joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """Files of ours that importing ``path`` imports at once or later (imports inside functions count):
    each module, the ``__init__.py`` of the packages above it, and ``from pkg import submodule``."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the packages above a module are imported first
                file = module_file(".".join(parts[:i]))
                if file is not None:
                    found.add(file)
    return found


def import_closure(module: str) -> set[Path]:
    """The files ``python -m <module>`` runs: the module, its packages' ``__init__.py`` and all they import."""
    parts = module.split(".")
    todo, seen = [module_file(".".join(parts[: i + 1])) for i in range(len(parts))], set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo.extend(imported_files(file) - seen)
    return seen


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def test_the_closure_follows_lazy_and_package_imports(tmp_path):
    closure = {p.relative_to(REPO).as_posix() for p in import_closure("stages.train_reference")}
    # train_reference -> synthgap.tracking -> (inside a method) synthgap.staging; -> synthgap.models (package)
    assert {"stages/train_reference.py", "src/synthgap/tracking.py", "src/synthgap/staging.py",
            "src/synthgap/models/__init__.py", "src/synthgap/train/classifier.py"} <= closure
    assert "stages/train_generator.py" not in closure and "stages/__init__.py" in closure


@pytest.mark.parametrize("stage", sorted(stage_definitions()))
def test_dvc_deps_cover_every_module_the_stage_imports(stage):
    spec = stage_definitions()[stage]
    module = spec["cmd"].split()[2]  # python -m stages.<name> [item]
    deps = [str(d).rstrip("/") for d in spec.get("deps", [])]
    missing = sorted(
        rel for rel in (p.relative_to(REPO).as_posix() for p in import_closure(module))
        if not any(rel == dep or rel.startswith(dep + "/") for dep in deps)
    )
    assert not missing, f"dvc.yaml stage {stage} imports files it does not depend on: {missing}"


def test_python_bytecode_is_no_dependency():
    """`src/synthgap` is a directory dependency: compiled files appearing beside the sources on the first
    import must not change its hash (else every stage would be out of date after the first run)."""
    import subprocess

    for path in ("src/synthgap/models/__pycache__/resnet.cpython-311.pyc", "src/synthgap/x.pyc"):
        proc = subprocess.run(["dvc", "check-ignore", path], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, f"{path} is not in .dvcignore"
