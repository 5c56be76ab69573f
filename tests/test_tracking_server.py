"""Sweeps across machines share one MLflow tracking server: two workers, one server, every run arrives."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.stages.test_stages import TINY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(backend: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
         str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,  # killpg stops its workers
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2):
                return proc, uri
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {proc.stderr.read()[-2000:]}") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not come up in 90 s")


def run_workers(tmp_path: Path, uri: str) -> None:
    """Two workers (separate workspaces, as on two machines) run the same stages with their own seeds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "SYNTHGAP_DEBUG"))}
    env["PYTHONPATH"] = str(REPO)
    procs = []
    for seed in (0, 1):
        ws = tmp_path / f"worker{seed}"
        ws.mkdir()
        text = TINY.format(name="digits", path="null").replace("seed: 0", f"seed: {seed}")
        (ws / "params.yaml").write_text(text + f"tracking:\n  uri: {uri}\n")
        shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")  # the stages take their paths from its cmd
        cmd = f"{sys.executable} -m stages.prepare_data && {sys.executable} -m stages.train_reference"
        procs.append(subprocess.Popen(cmd, shell=True, cwd=ws, env=env, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
    for seed in (0, 1):
        assert not (tmp_path / f"worker{seed}" / "mlflow.db").exists()  # nothing went to a local store


def check_runs(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("common")
    runs = client.search_runs([experiment.experiment_id])
    by_stage, children = {}, []
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags:
            children.append(run)
        else:
            by_stage.setdefault(run.info.run_name, []).append(run)
    assert sorted(by_stage) == ["prepare_data", "train_reference"]
    # one child run per trial under each worker's train_reference run
    parents = {r.info.run_id for r in by_stage["train_reference"]}
    assert sorted((c.data.tags["mlflow.parentRunId"] in parents, c.info.run_name) for c in children) == [
        (True, "train_reference/real/trial=0"), (True, "train_reference/real/trial=0"),
        (True, "train_reference/real/trial=1"), (True, "train_reference/real/trial=1")]
    assert sorted(r.data.params["seed"] for r in by_stage["train_reference"]) == ["0", "1"]
    for run in by_stage["train_reference"]:
        assert run.info.status == "FINISHED" and "test_top1" in run.data.metrics
        assert "history.csv" in {a.path for a in client.list_artifacts(run.info.run_id)}


def serve_two_workers(tmp_path: Path, backend: str) -> None:
    proc, uri = start_server(backend, tmp_path / "artifacts")
    try:
        run_workers(tmp_path, uri)
        check_runs(uri)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # a server and four stage processes: ~1-2 minutes of the default suite's 10 on 2 cores
def test_two_workers_share_one_server_with_a_sqlite_backend(tmp_path):
    serve_two_workers(tmp_path, f"sqlite:///{tmp_path / 'server.db'}")
    assert any((tmp_path / "artifacts").rglob("history.csv"))  # artifacts went to the server's store


@pytest.mark.slow
def test_two_workers_share_one_server_with_a_postgresql_backend(tmp_path):
    """PostgreSQL from Debian's package (initdb/pg_ctl), as a lab's shared server would run it."""
    pytest.importorskip("psycopg2")
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not installed (apt install postgresql)")
    import tempfile

    pg = bins[-1]
    home = Path(tempfile.mkdtemp(prefix="synthgap-pg-"))  # pytest's tmp folders are private to their owner
    data, port = home / "data", free_port()
    user = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    if user:
        shutil.chown(home, "postgres")
    subprocess.run([*user, str(pg / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"], check=True,
                   capture_output=True)
    # -l: the server's output goes to a file (a captured pipe would stay open as long as the server runs)
    subprocess.run([*user, str(pg / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-o",
                    f"-p {port} -k {home} -h 127.0.0.1", "-w", "start"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    try:
        subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, capture_output=True)
        serve_two_workers(tmp_path, f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow")
    finally:
        subprocess.run([*user, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
