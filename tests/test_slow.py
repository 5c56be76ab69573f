"""Slow end-to-end checks (run with `pytest -m slow`): real CIFAR-10 files and a clean-clone `dvc repro`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
# the development copy of CIFAR-10: next to the repository, or where benchmarks/device_check.sh --prepare put it
# (.data/, which also travels to the GPU machine), or named by SYNTHGAP_CIFAR10_JPG
CIFAR_JPG = [Path(p) for p in (os.environ.get("SYNTHGAP_CIFAR10_JPG"),) if p] + [
    REPO.parent / "shared" / "data" / "cifar10-jpg.tar.xz", REPO / ".data" / "cifar10-jpg.tar.xz"]


@pytest.fixture(scope="module")
def cifar10_jpg(tmp_path_factory) -> Path:
    extracted = REPO / "data" / "external" / "cifar10-jpg"
    if not (extracted / "test").is_dir():
        archive = next((p for p in CIFAR_JPG if p.is_file()), None)
        if archive is None:
            pytest.skip(f"no development copy of CIFAR-10 at {', '.join(map(str, CIFAR_JPG))}")
        extracted = tmp_path_factory.mktemp("cifar")
        with tarfile.open(archive) as tar:
            tar.extractall(extracted, filter="data")
    return extracted


def test_imagefolder_loader_reads_real_cifar10(cifar10_jpg):
    from synthgap.data import load_dataset

    ds = load_dataset("imagefolder", cifar10_jpg, download=False)
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert len(ds.classes) == 10 and set(ds.y_train.tolist()) == set(range(10))


def test_clean_clone_dvc_repro_and_experiment(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    subprocess.run(["dvc", "repro", "train_reference"], cwd=clone, env=env, check=True, capture_output=True)
    assert (clone / "reports" / "metrics" / "train_reference.json").is_file()
    subprocess.run(["dvc", "exp", "run", "-S", "seed=1", "train_reference"], cwd=clone, env=env, check=True, capture_output=True)
    from synthgap.tracking import get_client

    client = get_client(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("common")
    runs = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'train_reference'")
    assert sorted(run.data.params["seed"] for run in runs) == ["0", "1"]
    shutil.rmtree(clone)


def test_four_queued_experiments_on_two_workers_all_reach_mlflow(tmp_path):
    """`dvc exp run --queue` x4 then `dvc queue start -j 2`: four runs with their own params and metrics, none
    lost or mixed, artifacts under the repository root (not in DVC's temporary workspaces)."""
    import time

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    run = lambda *cmd: subprocess.run(cmd, cwd=clone, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("dvc", "repro", "train_reference")
    seeds = [11, 12, 13, 14]
    for seed in seeds:
        run("dvc", "exp", "run", "--queue", "-S", f"seed={seed}", "train_reference")
    run("dvc", "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run("dvc", "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(5)
    assert status.count("Success") == len(seeds), status
    from synthgap.tracking import get_client

    client = get_client(f"sqlite:///{clone / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("common")
    runs = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'train_reference'")
    queued = [r for r in runs if r.data.params["seed"] != "0"]
    assert sorted(int(r.data.params["seed"]) for r in queued) == seeds  # none lost, none duplicated
    assert all(r.info.status == "FINISHED" and "test_top1" in r.data.metrics for r in queued)
    # each run logged its own result: the one its experiment's metrics file holds under its run id
    refs = run("git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    files = [json.loads(run("git", "show", f"{ref}:reports/metrics/train_reference.json").stdout) for ref in refs]
    by_run = {f["mlflow_run_id"]: f["test_top1"] for f in files}
    assert {r.info.run_id: r.data.metrics["test_top1"] for r in queued} == pytest.approx(by_run)
    assert len({r.data.tags.get("dvc.exp_name") for r in queued}) == len(seeds)
    for r in queued:
        location = r.info.artifact_uri.removeprefix("file://")
        assert location.startswith(str(clone / "mlartifacts")) and ".dvc/tmp" not in location
        assert any((clone / "mlartifacts").rglob(f"{r.info.run_id}/artifacts/history.csv"))
    shutil.rmtree(clone)
