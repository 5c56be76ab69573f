"""`python -m synthgap.preset <name>`: a paper preset as one `dvc exp run`, with params.yaml kept as the one
file the stages read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synthgap.config import read_params_file
from synthgap.errors import UserError
from synthgap.preset import check, overrides, value
from tests.conftest import REPO

PRESETS = sorted((REPO / "params").glob("*.yaml"))


def test_values_are_written_in_hydras_override_grammar():
    assert [value(v) for v in (None, True, 3, 1e-05, 0.5)] == ["null", "true", "3", "1e-05", "0.5"]
    assert value("photo of {name}") == "'photo of {name}'" and value("it's") == "'it\\'s'"
    assert value([1, "x", [None]]) == "[1,'x',[null]]" and value({"a": 1, "b": [2.5]}) == "{a:1,b:[2.5]}"
    with pytest.raises(UserError, match="interpolation"):
        value("${seed}")


def test_only_what_differs_becomes_an_override_at_the_deepest_shared_mapping():
    current = {"a": {"b": 1, "c": 2}, "d": 3, "e": {}, "g": 1, "h": None}
    preset = {"a": {"b": 1, "c": 5}, "e": {"x": 1}, "f": [1], "g": 1.0, "h": {"k": "v"}}
    assert overrides(current, preset) == ["a.c=5", "e={x:1}", "+f=[1]", "g=1.0", "h={k:'v'}", "~d"]


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_dvc_turns_params_yaml_into_every_preset(preset):
    wanted = read_params_file(preset)
    sets = overrides(read_params_file(REPO / "params.yaml"), wanted)
    check(REPO / "params.yaml", wanted, sets)          # raises unless DVC's -S gives exactly the preset
    assert sets and all("=" in s or s.startswith("~") for s in sets)


def test_a_preset_that_dvc_would_change_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("a: 1\n")
    with pytest.raises(UserError, match="would not reproduce"):
        check(tmp_path / "params.yaml", {"a": 2}, ["a=3"])


def _git_dvc_repo(root: Path) -> dict:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(REPO)}
    (root / "params").mkdir()
    (root / "params.yaml").write_text("# what the stage copies\nsection:\n  lr: 0.1  # the step size\n  tag: a\n")
    (root / "params" / "paper.yaml").write_text("section:\n  lr: 1.0e-4\n  tag: photo of {name}\n  new: [1, 2]\n")
    (root / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp params.yaml out.yaml\n"
                                   "    params: [section]\n    outs: [out.yaml]\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "init"]):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return env


def test_a_preset_runs_as_one_tracked_dvc_experiment(tmp_path):
    env = _git_dvc_repo(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "synthgap.preset", "paper"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert read_params_file(tmp_path / "params.yaml") == read_params_file(tmp_path / "params" / "paper.yaml")
    assert "# the step size" in (tmp_path / "params.yaml").read_text()        # comments survive
    assert read_params_file(tmp_path / "out.yaml")["section"]["tag"] == "photo of {name}"   # the stage saw it
    shown = subprocess.run(["dvc", "exp", "show", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    names = [exp["name"] for commit in json.loads(shown.stdout) for exp in (commit.get("experiments") or [])]
    assert names == ["paper"], shown.stdout


def test_an_unknown_preset_ends_in_one_line_naming_the_known_ones(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "paper.yaml").write_text("seed: 1\n")
    proc = subprocess.run([sys.executable, "-m", "synthgap.preset", "cifar11"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "synthgap: error: no preset params/cifar11.yaml; use one of: paper"]
