"""A DVC remote round trip, as a second machine would use it (slow: two pipeline stages and an experiment).

Machine A reproduces the first stages, pushes outputs to a local-folder DVC remote and Git to a bare remote;
machine B clones, `dvc pull`s and finds everything up to date. An experiment run on A travels to B with
`dvc exp push` / `dvc exp pull` (what `scripts/sweep_worker.py` relies on).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
STAGES = ["prepare_data", "train_reference"]


def sh(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_outputs_and_experiments_travel_through_the_remotes(tmp_path):
    bare, storage, a, b = tmp_path / "origin.git", tmp_path / "dvc-storage", tmp_path / "a", tmp_path / "b"
    sh("git", "clone", "-q", "--bare", str(REPO), str(bare), cwd=tmp_path)
    sh("git", "clone", "-q", str(bare), str(a), cwd=tmp_path)
    for key, value in (("user.name", "test"), ("user.email", "test@example.com")):
        sh("git", "config", key, value, cwd=a)
    sh("dvc", "repro", *STAGES, cwd=a)
    sh("dvc", "remote", "add", "-d", "storage", str(storage), cwd=a)
    sh("git", "add", "-A", cwd=a)  # dvc.lock, the remote in .dvc/config and the git-tracked reports
    sh("git", "commit", "-q", "-m", "remote", cwd=a)
    sh("git", "push", "-q", "origin", "HEAD", cwd=a)
    sh("dvc", "push", *STAGES, cwd=a)

    sh("git", "clone", "-q", str(bare), str(b), cwd=tmp_path)
    sh("dvc", "pull", *STAGES, cwd=b)
    assert "up to date" in sh("dvc", "status", *STAGES, cwd=b).lower()
    model = "models/train_reference/classifier.pt"
    assert (b / model).read_bytes() == (a / model).read_bytes()
    (tmp_path / "a0.pt").write_bytes((a / model).read_bytes())

    sh("dvc", "exp", "run", "-n", "seed-one", "-S", "seed=1", "train_reference", cwd=a)
    sh("dvc", "exp", "push", "origin", "seed-one", cwd=a)
    sh("dvc", "exp", "pull", "origin", "seed-one", cwd=b)
    shown = {exp["name"]: exp for exp in experiments(json.loads(sh("dvc", "exp", "show", "--json", cwd=b)))}
    assert shown["seed-one"]["data"]["params"]["params.yaml"]["data"]["seed"] == 1
    sh("dvc", "exp", "branch", "seed-one", "seed-one-branch", cwd=b)
    sh("git", "checkout", "-q", "seed-one-branch", cwd=b)
    sh("dvc", "checkout", *STAGES, cwd=b)  # the experiment's outputs came with `dvc exp pull`
    assert "up to date" in sh("dvc", "status", *STAGES, cwd=b).lower()
    assert (b / model).read_bytes() == (a / model).read_bytes() != (tmp_path / "a0.pt").read_bytes()


def experiments(node):
    """Every experiment entry (a dict with a ``name`` and ``data``) in `dvc exp show --json` output."""
    if isinstance(node, dict):
        if node.get("name") and isinstance(node.get("data"), dict) and "params" in node["data"]:
            yield node
        for value in node.values():
            yield from experiments(value)
    elif isinstance(node, list):
        for item in node:
            yield from experiments(item)
