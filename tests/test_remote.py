"""DVC remotes and your own data, as a second machine or a new user would use them (slow: real DVC runs).

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


def test_replacing_your_own_data_puts_prepare_data_out_of_date(tmp_path):
    """README "Your own data": a file under data/raw/ is a dependency of prepare_data, and dvc add versions it."""
    import numpy as np

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(REPO), str(clone), cwd=tmp_path)

    def write(seed: int) -> None:
        rng = np.random.default_rng(seed)
        y = np.arange(60) % 3
        np.savez(clone / "data" / "raw" / "mine.npz", x_train=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8),
                 y_train=y, x_test=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y_test=y[:30])

    write(0)
    sh("dvc", "add", "data/raw/mine.npz", cwd=clone)
    assert "data/raw/mine.npz.dvc" in sh("git", "status", "--porcelain", "--untracked-files=all", cwd=clone)
    sh("dvc", "exp", "run", "-S", "data.name=npz", "-S", "data.path=data/raw/mine.npz", "-S", "prepare_data.val_size=30",
       "prepare_data", cwd=clone)
    assert json.loads((clone / "data" / "processed" / "info.json").read_text())["name"] == "mine"
    assert "up to date" in sh("dvc", "status", "prepare_data", cwd=clone).lower()
    write(1)
    status = sh("dvc", "status", "prepare_data", cwd=clone)
    assert "changed deps" in status and "data/raw" in status
