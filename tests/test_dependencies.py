"""Dependencies that cannot go stale: every stage's ``deps`` in dvc.yaml cover every file of ``src/synthgap``
and ``stages`` its command imports, directly or not (found by reading the imports, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from synthgap.staging import split_command
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
    module = split_command(spec["cmd"])[0]  # python -m stages <name> [item]
    assert module == f"stages.{stage}"
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


# ------------------------------------------------------------------------------------- paths declared once
def command_paths(spec: dict) -> dict[str, str]:
    """The ``--name path`` options of a stage's cmd, unresolved (``${item}`` as written)."""
    tokens = split_command(spec["cmd"])[1]
    return {t[2:]: tokens[i + 1] for i, t in enumerate(tokens) if t.startswith("--")}


def declared_paths(spec: dict) -> list[str]:
    paths = []
    for kind in ("deps", "outs", "metrics", "plots"):
        for entry in spec.get(kind) or []:
            paths.append(str(next(iter(entry)) if isinstance(entry, dict) else entry).rstrip("/"))
    return paths


def related(a: str, b: str) -> bool:
    """One path is the other or lies inside it."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@pytest.mark.parametrize("stage", sorted(stage_definitions()))
def test_every_path_a_stage_gets_is_declared_and_every_declared_path_is_passed(stage):
    """dvc.yaml is the one home of paths: a stage reads and writes only what its cmd passes, each of those is a
    declared dep or out (or a file in a declared folder, or the folder of declared files), and every declared
    data dep and output reaches the stage through its cmd (its metrics file is StageRun's, by rule)."""
    spec = stage_definitions()[stage]
    passed, declared = command_paths(spec), declared_paths(spec)
    undeclared = {name: path for name, path in passed.items() if not any(related(path, d) for d in declared)}
    assert not undeclared, f"{stage} gets paths dvc.yaml does not declare as deps or outs: {undeclared}"
    code = ("stages/", "src/synthgap")
    metrics = f"reports/metrics/{stage}{'@${item}' if '${item}' in spec['cmd'] else ''}.json"  # foreach: per item
    unpassed = [d for d in declared if not d.startswith(code) and d != metrics
                and not any(related(d, path) for path in passed.values())]
    assert not unpassed, f"{stage} declares paths its cmd does not pass: {unpassed}"


def test_stage_scripts_name_no_data_model_or_report_path():
    """The stages take every path from their command line: no ``workspace / "reports"`` joins and no
    ``"data/..."`` literals in their code (docstrings may name the defaults)."""
    offending = []
    for script in sorted((REPO / "stages").glob("*.py")):
        tree = ast.parse(script.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        joined = {id(node.right) for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                text = node.value
                if (id(node) in joined and text in ("data", "models", "reports")) or text.startswith(("data/", "models/", "reports/")):
                    offending.append(f"{script.name}:{node.lineno}: {text!r}")
    assert not offending, offending


def test_a_stage_run_by_hand_takes_its_paths_from_dvc_yaml(tmp_path):
    """``python -m stages augment 100`` without options gets the cmd's paths with ``${item}`` and
    ``${<params key>}`` filled in as DVC fills them."""
    from synthgap.staging import declared_command

    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  s:\n    foreach: [7]\n    do:\n      cmd: python -m stages s ${item} --pool p/${item}.npz\n"
        "        --edm q/${a.b}.npz\n")
    (tmp_path / "params.yaml").write_text("a: {b: 400}\n")
    assert declared_command(tmp_path, "s@7") == ["7", "--pool", "p/7.npz", "--edm", "q/400.npz"]
    assert declared_command(tmp_path, "other") == []
