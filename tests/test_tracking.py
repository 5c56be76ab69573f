import json
import socket

import pytest

from synthgap.config import load_stage_params
from synthgap.errors import UserError
from synthgap.paths import repo_root, workspace_root
from synthgap.tracking import StageRun, check_reachable, get_client, resolve_tracking_uri


@pytest.fixture
def params(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: 7\ndata:\n  name: digits\n")
    return load_stage_params("train_reference", tmp_path / "params.yaml")


def test_uri_defaults_to_sqlite_at_the_root_and_anchors_relative_paths(tmp_path):
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///sub/x.db", tmp_path) == f"sqlite:///{tmp_path}/sub/x.db"
    assert resolve_tracking_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    assert resolve_tracking_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    with pytest.raises(UserError, match="unsupported scheme"):
        resolve_tracking_uri("ftp://x", tmp_path)


def test_dvc_temporary_workspace_maps_to_the_real_root(monkeypatch, tmp_path):
    temp = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    (temp / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(temp)
    for inherited in (None, str(tmp_path), str(temp)):  # queue workers may carry any of these
        if inherited is None:
            monkeypatch.delenv("DVC_ROOT", raising=False)
        else:
            monkeypatch.setenv("DVC_ROOT", inherited)
        assert workspace_root() == temp  # outputs go where DVC runs the stage
        assert repo_root() == tmp_path  # MLflow and resumable state go to the real repository


def test_unreachable_server_fails_before_compute():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"127.0.0.1:{port} is unreachable"):
        check_reachable(f"http://127.0.0.1:{port}", timeout=2)


def test_stage_run_logs_params_tags_metrics_and_writes_the_metrics_file(tmp_path, params, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    with StageRun(params, "common", root=tmp_path, metrics_dir=tmp_path / "metrics") as run:
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_metrics({"test_top1": 91.5, "note": "skipped"})
        run.log_metrics({"train_seconds": 12.5}, timing=True)
        with run.child("cell-1", {"n_base": 100, "setting": "real"}) as child:
            child.log_metrics({"accuracy": 80.0})
        artifact = tmp_path / "figure.png"
        artifact.write_bytes(b"png")
        run.log_artifact(artifact)
    written = json.loads((tmp_path / "metrics" / "train_reference.json").read_text())
    assert written == {"test_top1": 91.5, "mlflow_run_id": run.run_id}

    client = get_client(run.uri)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "train_reference"
    assert logged.data.params["seed"] == "7"
    assert logged.data.params["train_reference.classifier.train.lr"] == "0.1"
    assert logged.data.tags["synthgap.dataset"] == "digits" and logged.data.tags["dvc.exp_name"] == "exp-test"
    assert logged.data.metrics["test_top1"] == 91.5 and logged.data.metrics["train_seconds"] == 12.5
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "common" and experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert (tmp_path / "mlartifacts" / "common").is_dir()
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["figure.png"]
    children = client.search_runs([logged.info.experiment_id], f"tags.mlflow.parentRunId = '{run.run_id}'")
    assert len(children) == 1 and children[0].data.params == {"n_base": "100", "setting": "real"}
    assert children[0].data.tags["dvc.exp_name"] == "exp-test" and children[0].info.run_name == "cell-1"
    assert children[0].data.tags["synthgap.stage"] == "train_reference"
    assert children[0].data.metrics == {"accuracy": 80.0}


def test_failed_stage_marks_the_run_failed_and_keeps_the_old_metrics_file(tmp_path, params):
    metrics = tmp_path / "metrics" / "train_reference.json"
    metrics.parent.mkdir()
    metrics.write_text('{"test_top1": 99.0}')
    with pytest.raises(RuntimeError):
        with StageRun(params, "common", root=tmp_path, metrics_dir=metrics.parent) as run:
            raise RuntimeError("boom")
    assert metrics.read_text() == '{"test_top1": 99.0}'
    assert get_client(run.uri).get_run(run.run_id).info.status == "FAILED"


def test_runs_name_their_datasets_and_stage_script(tmp_path, params, monkeypatch):
    import hashlib

    import numpy as np

    processed = tmp_path / "data" / "processed"
    processed.mkdir(parents=True)
    np.savez(processed / "dataset.npz", x_train=np.zeros((5, 2, 2, 1), np.uint8))
    counts = {"train": [2, 3], "val": [1, 1], "test": [4, 0]}
    (processed / "info.json").write_text(json.dumps({"name": "digits", "class_counts": counts}))
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    with StageRun(params, "common", root=tmp_path, metrics_dir=tmp_path / "metrics") as run:
        run.log_metrics({"test_top1": 1.0})
    logged = get_client(run.uri).get_run(run.run_id)
    digest = hashlib.md5((processed / "dataset.npz").read_bytes()).hexdigest()[:16]
    found = {(d.dataset.name, d.dataset.digest, json.loads(d.dataset.profile)["num_rows"], d.tags[0].value)
             for d in logged.inputs.dataset_inputs}
    assert found == {("digits-train", digest, 5, "train"), ("digits-val", digest, 2, "val"), ("digits-test", digest, 4, "test")}
    assert logged.data.tags["mlflow.source.name"] == "stages/train_reference.py"


def test_a_moved_workspace_logs_artifacts_into_its_own_folder_and_keeps_the_old_ones(tmp_path, monkeypatch):
    import shutil

    def stage_run(root):
        (root / "params.yaml").write_text("seed: 7\ndata:\n  name: digits\n")
        params = load_stage_params("train_reference", root / "params.yaml")
        with StageRun(params, "common", root=root, metrics_dir=root / "metrics") as run:
            (root / "figure.png").write_bytes(b"png")
            run.log_artifact(root / "figure.png")
        return run.run_id

    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    monkeypatch.chdir(before)
    first = stage_run(before)
    monkeypatch.chdir(tmp_path)
    shutil.move(before, after)
    monkeypatch.chdir(after)
    second = stage_run(after)
    client = get_client(f"sqlite:///{after / 'mlflow.db'}")
    assert client.get_experiment_by_name("common").artifact_location == (after / "mlartifacts" / "common").as_uri()
    for run_id in (first, second):
        assert client.get_run(run_id).info.artifact_uri.startswith((after / "mlartifacts" / "common").as_uri() + "/")
        assert [a.path for a in client.list_artifacts(run_id)] == ["figure.png"]
        assert (after / "mlartifacts" / "common" / run_id / "artifacts" / "figure.png").read_bytes() == b"png"
    assert not before.exists()


# ------------------------------------------------------------------------------------------ the daemon
def _peer_pid(sock) -> int:
    import struct

    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]


def _stage_process_peer(address) -> int:
    """In a new Python process (as a stage is): connect to the daemon at ``address``; the daemon's pid."""
    import subprocess
    import sys

    code = ("import sys, pathlib; from synthgap import tracking as t; from tests.test_tracking import _peer_pid\n"
            f"c = t.connect_daemon(pathlib.Path({str(address)!r}))\n"
            "print(_peer_pid(c._sock))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo_root())
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_stages_share_one_daemon_that_outlives_them_and_serves_their_runs(tmp_path, params):
    from synthgap.tracking import connect_daemon

    address = tmp_path / "t.sock"
    first, second = _stage_process_peer(address), _stage_process_peer(address)
    assert first == second  # the second stage found the first one's daemon
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = connect_daemon(address)
    assert _peer_pid(store._sock) == first
    experiment_id, run_id = store.call("open", uri, "common", tmp_path, "train_reference", {}, {"seed": 7}, tmp_path)
    store.call("set_terminated", run_id, "FINISHED")
    run = get_client(uri).get_run(run_id)  # written by the daemon, read here
    assert run.info.status == "FINISHED" and run.data.params == {"seed": "7"}
    store.close()


def test_a_new_daemon_replaces_a_dead_ones_socket(tmp_path):
    import os
    import signal

    from synthgap.tracking import connect_daemon

    address = tmp_path / "t.sock"
    store = connect_daemon(address)
    pid = _peer_pid(store._sock)
    os.kill(pid, signal.SIGKILL)  # its socket file stays behind
    store.close()
    try:
        os.waitpid(pid, 0)  # all of its threads are gone (this process started it)
    except ChildProcessError:  # reaped already by subprocess's own clean-up
        pass
    assert address.exists()
    store = connect_daemon(address)
    replacement = _peer_pid(store._sock)
    assert replacement != pid and store.call("finished_children", f"sqlite:///{tmp_path / 'm.db'}", "gafi", "x") == []
    store.close()


def test_an_idle_daemon_removes_its_socket_and_exits(tmp_path):
    import os
    import subprocess
    import sys
    import time

    address = tmp_path / "t.sock"
    ready_read, ready_write = os.pipe()
    daemon = subprocess.Popen([sys.executable, "-c", "import sys, pathlib; from synthgap.tracking import serve_daemon; "
                               f"serve_daemon(pathlib.Path({str(address)!r}), {ready_write}, idle_s=0.5)"],
                              pass_fds=(ready_write,))
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1"
    with socket.socket(socket.AF_UNIX) as client:  # a connection keeps it alive past its idle time
        client.connect(str(address))
        time.sleep(2.5)
        assert daemon.poll() is None
    assert daemon.wait(timeout=30) == 0
    assert not address.exists()


def test_the_daemon_key_and_its_private_folder(tmp_path, monkeypatch):
    import os

    from synthgap.tracking import daemon_address, store_process

    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    for name in ("MLFLOW_TRACKING_USERNAME", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    plain = daemon_address()
    assert plain.parent == tmp_path / f"synthgap-{os.getuid()}" and plain.parent.stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    other_user = daemon_address()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert len({plain, other_user, daemon_address()}) == 3  # other credentials or routes: another daemon
    plain.parent.chmod(0o755)  # others could connect and send pickles: not used
    with pytest.raises(OSError, match="not a folder private"):
        daemon_address()
    monkeypatch.setattr("synthgap.tracking._shared", None)
    store = store_process()
    assert store._process is not None  # a child of its own instead
    store.close()
