"""The stage scripts run as a user runs them: a process in a workspace holding params.yaml."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

TINY = """seed: 0
trials: 2
device: cpu
data:
  name: {name}
  path: {path}
prepare_data:
  val_size: 100
equivalence:
  base_sizes: [50]
train_reference:
  classifier:
    model: {{arch: resnet20, width: 4}}
    train: {{epochs: 2, batch_size: 64, milestones: [1], crop_padding: 1, flip: false}}
"""


def stage_env() -> dict[str, str]:
    """The environment of a stage started as its own process: this one without DVC's and the debug variables,
    with the repository on the path."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "SYNTHGAP_DEBUG"))} | {"PYTHONPATH": str(REPO)}


def run_stage(stage: str, workspace: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *extra], cwd=workspace, env=stage_env(), capture_output=True, text=True,
        timeout=300,
    )


def run_killed(stage: str, workspace: Path, module: str, epoch: int, *extra: str) -> subprocess.CompletedProcess:
    """``stage`` in a process of its own that SIGKILLs itself as ``module``'s training loop is about to write
    the resumable state after ``epoch``: the states before it are on disk, that epoch's work is lost. The kill
    lands at a known point: no parent polls the disk in a race the child can win by finishing first."""
    child = (
        "import os, runpy, signal\n"
        f"import {module} as loop\n"
        "save = loop.save_state\n"
        "def save_or_die(path, fingerprint, *, epoch, **kw):\n"
        f"    if epoch == {epoch}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    save(path, fingerprint, epoch=epoch, **kw)\n"
        "loop.save_state = save_or_die\n"
        f"runpy.run_module('stages.{stage}', run_name='__main__')\n"
    )
    return subprocess.run([sys.executable, "-c", child, *extra], cwd=workspace, env=stage_env(), capture_output=True,
                          text=True, timeout=300)


def run_in_process(ws: Path, stage: str, *args: str) -> None:
    """One stage as ``python -m stages.<stage> *args`` run in ``ws`` would run it; SystemExit on failure."""
    saved = (Path.cwd(), list(sys.argv), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    try:
        os.chdir(ws)
        sys.argv = [str(REPO / "stages" / f"{stage}.py"), *args]
        runpy.run_module(f"stages.{stage}", run_name="__main__", alter_sys=False)
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        signal.signal(signal.SIGINT, saved[2])
        signal.signal(signal.SIGTERM, saved[3])


def run_stage_here(stage: str, workspace: Path, *extra: str) -> subprocess.CompletedProcess:
    """``run_stage`` in this test process: the same exit status, stdout and stderr, without paying the
    interpreter's and torch's start-up again (~7 s a stage here). For error paths, whose one line is what the
    tests check; a run that needs a process of its own (signals, environment) uses ``run_stage``."""
    stripped = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("DVC_", "SYNTHGAP_DEBUG"))}
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_in_process(workspace, stage, *extra)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        os.environ.update(stripped)
    return subprocess.CompletedProcess([stage, *extra], code, out.getvalue(), err.getvalue())


def workspace(tmp_path: Path, name: str = "digits", path: str = "null", **edits: str) -> Path:
    text = TINY.format(name=name, path=path)
    for old, new in edits.items():
        text = text.replace(old, new)
    (tmp_path / "params.yaml").write_text(text)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")  # the stages take their paths from its cmd
    return tmp_path


def assert_one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("synthgap: error: ") and "; " in lines[-1]
    assert not [line for line in lines if line.startswith("synthgap: error")][:-1]
    for needle in needles:
        assert needle in lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    ws = workspace(tmp_path_factory.mktemp("ws"))
    for stage in ("prepare_data", "train_reference"):  # in this process; the fresh-chain test starts processes
        proc = run_stage_here(stage, ws)
        assert proc.returncode == 0, proc.stderr
    return ws


def test_prepare_and_train_write_outputs_metrics_and_mlflow_runs(trained):
    info = json.loads((trained / "data" / "processed" / "info.json").read_text())
    assert info["sizes"] == {"train": 1247, "val": 100, "test": 450} and info["split_seed"] == 0
    assert (trained / "models" / "train_reference" / "classifier.pt").is_file()
    for name in ("history.csv", "per_class.csv", "curves.png", "per_class.png"):
        assert (trained / "reports" / "train_reference" / name).is_file()
    metrics = json.loads((trained / "reports" / "metrics" / "train_reference.json").read_text())
    assert len(metrics["mlflow_run_id"]) == 32 and (trained / "mlflow.db").is_file()
    assert metrics["test_top1"] > 25  # ten digit classes: chance is 10 %, two epochs of a width-4 ResNet-20 learn
    from synthgap.tracking import get_client

    logged = get_client(f"sqlite:///{trained / 'mlflow.db'}").get_run(metrics["mlflow_run_id"]).data.metrics
    assert logged["test_top1"] == pytest.approx(metrics["test_top1"])  # the UI shows the mean over trials
    assert "epoch_test_top1" in logged and "epoch_train_loss" in logged  # and trial 0's learning curve


def without_run_ids(path: Path):
    """A JSON file's content with every ``mlflow_run_id`` removed (run ids are unique by design)."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "mlflow_run_id"}
        return [strip(v) for v in obj] if isinstance(obj, list) else obj
    return strip(json.loads(path.read_text()))


def test_the_same_chain_in_a_fresh_workspace_writes_identical_results(trained, tmp_path):
    """Reproducibility on one machine: weights byte for byte, metrics and per-trial results equal (only the
    MLflow run ids differ), whether a stage runs in its own process (here) or in the test's (``trained``)."""
    fresh = workspace(tmp_path)
    for stage in BOTH:
        proc = run_stage(stage, fresh)
        assert proc.returncode == 0, proc.stderr
    for name in ("data/processed/dataset.npz", "data/processed/info.json", "models/train_reference/classifier.pt",
                 "reports/train_reference/per_class.csv"):
        assert (fresh / name).read_bytes() == (trained / name).read_bytes(), name
    for name in ("reports/metrics/prepare_data.json", "reports/metrics/train_reference.json",
                 "reports/train_reference/trials.json"):
        assert without_run_ids(fresh / name) == without_run_ids(trained / name), name


def test_a_filter_recipe_trains_one_more_classifier_saved_as_the_filter(trained, tmp_path):
    """train_reference.filter: the Real Data rows stay the trials of the classifier recipe; the filter (width 8,
    3 epochs here) is saved as classifier.pt. Every row carries the best test top-1 over epochs."""
    import shutil

    ws = workspace(tmp_path, **{"flip: false}": "flip: false}\n  filter:\n    model: {arch: resnet20, width: 8}\n"
                                "    train: {epochs: 3, batch_size: 64, milestones: [2], crop_padding: 1, flip: false}"})
    shutil.copytree(trained / "data", ws / "data")
    proc = run_stage_here("train_reference", ws)
    assert proc.returncode == 0, proc.stderr
    trials = json.loads((ws / "reports" / "train_reference" / "trials.json").read_text())
    assert [r["cell"] for r in trials["rows"]] == ["real", "real"] and trials["filter"]["cell"] == "filter"
    assert without_run_ids(ws / "reports" / "train_reference" / "trials.json")["rows"] == \
        without_run_ids(trained / "reports" / "train_reference" / "trials.json")["rows"]  # Real Data unchanged
    assert all(r["best_test_top1"] >= r["test_top1"] - 1e-9 for r in trials["rows"] + [trials["filter"]])
    history = (ws / "reports" / "train_reference" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 3 and "test_top1" in history[0]  # the filter's 3 epochs
    from synthgap.models import load_classifier

    assert load_classifier(ws / "models" / "train_reference" / "classifier.pt").spec.width == 8
    metrics = json.loads((ws / "reports" / "metrics" / "train_reference.json").read_text())
    assert metrics["filter_test_top1"] == trials["filter"]["test_top1"]
    assert json.loads((trained / "reports" / "train_reference" / "trials.json").read_text())["filter"] is None


def snapshot(ws: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file() and "mlflow" not in p.name and "mlartifacts" not in str(p)}


BOTH = ("prepare_data", "train_reference")


@pytest.mark.parametrize(
    "edit,stages,needles",
    [
        ({"name: digits": "name: nosuch"}, BOTH, ("data.name = 'nosuch'",)),
        ({"batch_size: 64": "batch_size: 64, lr: -0.1"}, ("train_reference",), ("lr = -0.1", "greater than 0")),
        ({"seed: 0": "seed: 0\nsede: 1"}, BOTH, ("unknown key 'sede'",)),
        ({"width: 4": "width: 4, depth: 20"}, ("train_reference",), ("unknown key 'train_reference.classifier.model.depth'",)),
        ({"val_size: 100": "val_size: 100000"}, ("prepare_data",), ("val_size = 100000", "choose 0 or a value")),
        ({"base_sizes: [50]": "base_sizes: [5]"}, ("train_diffusion@5",),
         ("equivalence.base_sizes: subset size 5 is smaller than the number of classes",)),
        ({"base_sizes: [50]": "base_sizes: [100000]"}, ("train_diffusion@100000",),
         ("equivalence.base_sizes: subset size 100000 is larger than the training split",)),
        ({"base_sizes: [50]": "base_sizes: [-5]"}, ("train_diffusion@-5",), ("each base size must be positive",)),
        ({"base_sizes: [50]": "base_sizes: [50]\n  quality: {inception_weights: nosuch.pth}"}, ("measure_synthetic",),
         ("nosuch.pth not found", "pt_inception-2015-12-05-6726825d.pth")),
    ],
)
def test_bad_params_end_with_one_line_and_touch_nothing(trained, edit, stages, needles):
    before = snapshot(trained)
    original = (trained / "params.yaml").read_text()
    try:
        text = original
        for old, new in edit.items():
            text = text.replace(old, new)
        (trained / "params.yaml").write_text(text)
        for stage in stages:
            name, *item = stage.split("@")
            assert_one_error_line(run_stage_here(name, trained, *item), *needles)
    finally:
        (trained / "params.yaml").write_text(original)
    assert snapshot(trained) == before


def test_missing_and_truncated_npz(tmp_path):
    ws = workspace(tmp_path, name="npz", path="data/mine.npz")
    assert_one_error_line(run_stage_here("prepare_data", ws), "mine.npz", "no such file")
    rng = np.random.default_rng(0)
    (ws / "data").mkdir()
    np.savez(ws / "data" / "mine.npz", x_train=rng.integers(0, 255, (300, 8, 8), dtype=np.uint8), y_train=np.arange(300) % 3,
             x_test=np.zeros((30, 8, 8), np.uint8), y_test=np.arange(30) % 3)
    raw = (ws / "data" / "mine.npz").read_bytes()
    (ws / "data" / "mine.npz").write_bytes(raw[: len(raw) // 3])
    assert_one_error_line(run_stage_here("prepare_data", ws), "truncated or corrupt")
    assert not (ws / "data" / "processed").exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    ws = workspace(tmp_path, name="nosuch")
    proc = run_stage("prepare_data", ws, "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "stage,addition,needles",
    [
        ("cas_final", "gafi:\n  threshold: 1.2\n", ("gafi.threshold = 1.2", "less than 1")),
        ("cas_final", "gafi:\n  stddev: 0.0\n", ("gafi.stddev = 0.0", "greater than 0")),
        ("tune_threshold", "gafi:\n  search: {thresholds: [0.0, 1.5]}\n", ("filter threshold must lie in [0, 1)",)),
        ("tune_stddev", "gafi:\n  search: {stddevs: [-1.0]}\n", ("noise stddev must be > 0",)),
        ("cas_multi", "gafi:\n  generator_seeds: [0]\n  num_generators: [1, 2]\n", ("num_generators [2] need 1..1 generators",)),
    ],
)
def test_bad_gafi_params_end_with_one_line_and_touch_nothing(trained, stage, addition, needles):
    before = snapshot(trained)
    original = (trained / "params.yaml").read_text()
    try:
        (trained / "params.yaml").write_text(original + addition)
        assert_one_error_line(run_stage_here(stage, trained, "0"), *needles)
    finally:
        (trained / "params.yaml").write_text(original)
    assert snapshot(trained) == before


def test_unreachable_tracking_server_stops_before_compute(trained):
    before = snapshot(trained)
    original = (trained / "params.yaml").read_text()
    port = closed_port()
    try:
        (trained / "params.yaml").write_text(original + f"tracking:\n  uri: http://127.0.0.1:{port}\n")
        line = assert_one_error_line(run_stage_here("train_reference", trained), f"127.0.0.1:{port} is unreachable")
        assert "tracking.uri: null" in line
    finally:
        (trained / "params.yaml").write_text(original)
    assert snapshot(trained) == before


def test_reference_classifier_from_another_dataset_is_refused(trained, tmp_path):
    """The filter classifier was trained on digits (10 classes); a 3-class dataset must not use it."""
    ws = tmp_path / "other"
    ws.mkdir()
    (ws / "models").symlink_to(trained / "models", target_is_directory=True)
    rng = np.random.default_rng(0)
    np.savez(ws / "three.npz", x_train=rng.integers(0, 255, (300, 8, 8), dtype=np.uint8), y_train=np.arange(300) % 3,
             x_test=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), y_test=np.arange(60) % 3)
    workspace(ws, name="npz", path="three.npz", **{"val_size: 100": "val_size: 30"})
    assert run_stage_here("prepare_data", ws).returncode == 0
    line = assert_one_error_line(run_stage_here("cas_baseline", ws), "was trained on digits (10 classes")
    assert "not on three (3 classes" in line and "rerun train_reference" in line
