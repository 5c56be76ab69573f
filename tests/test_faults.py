"""Fault injection: a stage meets a broken environment (read-only or blocked folders, a file-size limit, a
tracking store that is gone or is not MLflow, SIGTERM, SIGKILL) and ends with exit 2 and one line, its earlier
outputs untouched and no MLflow run left RUNNING, or resumes to the result of an uninterrupted run."""

from __future__ import annotations

import http.server
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from synthgap import staging
from synthgap.errors import UserError
from synthgap.paths import atomic_write_text
from tests.stages.test_stages import (assert_one_error_line, run_killed, run_stage, run_stage_here, snapshot, stage_env,
                                      workspace)

REPO = Path(__file__).resolve().parents[1]

SLOW_TRAIN = {"trials: 2": "trials: 1", "epochs: 2": "epochs: 4, checkpoint_every: 1"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A workspace (with the repository's dvc.yaml) after prepare_data and one train_reference run."""
    ws = workspace(tmp_path_factory.mktemp("prepared"))
    for stage in ("prepare_data", "train_reference"):
        proc = run_stage_here(stage, ws)
        assert proc.returncode == 0, proc.stderr
    return ws


def copy_of(prepared: Path, tmp_path: Path, **edits: str) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(prepared, ws)
    text = (ws / "params.yaml").read_text()
    for old, new in edits.items():
        text = text.replace(old, new)
    (ws / "params.yaml").write_text(text)
    return ws


def runs_of(ws: Path, experiment: str = "common", uri: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{ws / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def popen_stage(stage: str, ws: Path, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"stages.{stage}", *args], cwd=ws, env=stage_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_state(proc: subprocess.Popen, ws: Path, stage: str) -> None:
    folder = ws / ".synthgap" / "state"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if folder.is_dir() and any(folder.glob(f"{stage}-*.pt")):
            return
        time.sleep(0.05)
    raise AssertionError(f"{stage} wrote no state before it ended: {proc.communicate()[1][-2000:]}")


# ------------------------------------------------------------------------------------------ staged outputs
def test_outputs_of_a_stage_land_together_only_when_it_succeeds(tmp_path):
    (tmp_path / "report.txt").write_text("old")
    with staging.transaction(tmp_path):
        atomic_write_text(tmp_path / "report.txt", "new")
        atomic_write_text(tmp_path / "models" / "weights.txt", "w")
        atomic_write_text(tmp_path / ".synthgap" / "state" / "s.txt", "state")  # resumable state: at once
        assert (tmp_path / "report.txt").read_text() == "old"
        assert not (tmp_path / "models" / "weights.txt").exists()
        assert staging.current(tmp_path / "report.txt").read_text() == "new"  # the stage reads its own copy
        assert (tmp_path / ".synthgap" / "state" / "s.txt").read_text() == "state"
    assert (tmp_path / "report.txt").read_text() == "new"
    assert (tmp_path / "models" / "weights.txt").read_text() == "w"
    assert not any((tmp_path / ".synthgap" / "staging").iterdir())


def test_a_failed_stage_replaces_nothing_but_keeps_state_and_write_through_folders(tmp_path):
    (tmp_path / "report.txt").write_text("old")
    with pytest.raises(RuntimeError), staging.transaction(tmp_path):
        atomic_write_text(tmp_path / "report.txt", "new")
        staging.write_through(tmp_path / "snapshots")
        atomic_write_text(tmp_path / "snapshots" / "epoch_1.txt", "kept")
        atomic_write_text(tmp_path / ".synthgap" / "state" / "s.txt", "state")
        raise RuntimeError("the stage fails after writing")
    assert (tmp_path / "report.txt").read_text() == "old"
    assert (tmp_path / "snapshots" / "epoch_1.txt").read_text() == "kept"
    assert (tmp_path / ".synthgap" / "state" / "s.txt").read_text() == "state"
    assert [p for p in tmp_path.rglob("*") if p.is_file() and "staging" in p.parts] == []


def test_staging_folders_of_dead_processes_are_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / ".synthgap" / "staging" / dead.stdout.strip() / "report.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("half a run")
    with staging.transaction(tmp_path):
        pass
    assert not stale.parent.exists()


# ----------------------------------------------------------------------------------------- before compute
def test_declared_outputs_and_their_last_sizes_come_from_dvc_yaml_and_lock(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  gen:\n    foreach: [1, 2]\n    do:\n      cmd: x\n      outs:\n        - models/seed_${item}:\n"
        "            persist: true\n      metrics:\n        - reports/metrics/gen@${item}.json:\n            cache: false\n"
    )
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  gen@2:\n    cmd: x\n    outs:\n    - path: models/seed_2\n      md5: a.dir\n"
        "      size: 3000\n      nfiles: 3\n"
    )
    outputs = staging.declared_outputs(tmp_path, "gen@2")
    assert outputs == {tmp_path / "models/seed_2": (3000, 1000), tmp_path / "reports/metrics/gen@2.json": (0, 0)}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (999, hard))
    try:
        with pytest.raises(UserError, match="at most 999 bytes .* about 1000 bytes"):
            staging.preflight(tmp_path, "gen@2")
        staging.preflight(tmp_path, "gen@1")  # nothing known about gen@1's sizes: no refusal
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_too_little_free_disk_for_the_last_outputs_stops_before_compute(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages:\n  train:\n    cmd: x\n    outs:\n      - models/train\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train:\n    cmd: x\n    outs:\n"
                                      "    - path: models/train\n      md5: a.dir\n      size: 300000000\n      nfiles: 3\n")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage._replace(free=200 * 2**20))
    with pytest.raises(UserError, match=r"only 200 MiB free .* train needs about 350 MiB"):
        staging.preflight(tmp_path, "train")
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage._replace(free=400 * 2**20))
    staging.preflight(tmp_path, "train")


def test_a_file_where_an_output_folder_belongs_stops_before_compute(prepared, tmp_path):
    ws = copy_of(prepared, tmp_path)
    shutil.rmtree(ws / "models")
    (ws / "models").write_text("not a folder")
    before, runs = snapshot(ws), len(runs_of(ws))
    proc = run_stage_here("train_reference", ws)
    assert_one_error_line(proc, f"{ws / 'models'} is a file where a folder belongs")
    assert snapshot(ws) == before and len(runs_of(ws)) == runs  # stopped before it opened an MLflow run


def read_only_bind(folder: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode == 0


def test_a_read_only_output_folder_stops_before_compute(prepared, tmp_path):
    ws = copy_of(prepared, tmp_path)
    reports = ws / "reports" / "train_reference"
    if os.geteuid() != 0:
        reports.chmod(0o555)
    elif not read_only_bind(reports):
        pytest.skip("needs a non-root user or a read-only bind mount")
    try:
        before, runs = snapshot(ws), len(runs_of(ws))
        assert_one_error_line(run_stage_here("train_reference", ws), str(reports), "read-only")
        assert snapshot(ws) == before and len(runs_of(ws)) == runs
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(reports)], check=False)
        reports.chmod(0o755)


def test_a_file_size_limit_hit_during_the_run_replaces_nothing(prepared, tmp_path):
    ws = copy_of(prepared, tmp_path, **{"width: 4": "width: 24"})  # a 2.5 MB classifier.pt
    args = staging.declared_command(ws, "train_reference")  # its paths, passed as DVC passes them
    (ws / "dvc.yaml").unlink()  # no record of the outputs' sizes: the limit is only met when writing
    before = snapshot(ws)
    limit = 1_500_000  # above mlflow.db, below the new weights

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = popen_stage("train_reference", ws, *args, preexec_fn=small_files)
    _, err = proc.communicate(timeout=300)
    assert_one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err),
                          "could not write", "File too large", "no output of this stage was replaced")
    assert snapshot(ws) == before
    assert {r.info.status for r in runs_of(ws)} == {"FINISHED", "FAILED"}


# --------------------------------------------------------------------------------------------- tracking
class NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK" if self.path == "/health" else b"<html>not here</html>")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_mlflow_and_a_malformed_uri_stop_before_compute(prepared, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for uri, needles in ((f"http://127.0.0.1:{server.server_port}", ("failed at the start", "MLflow tracking server")),
                             ("http://[::1", ("tracking.uri 'http://[::1' is not a valid URI",))):
            ws = copy_of(prepared, tmp_path / uri.replace("/", "_").replace(":", "_"))
            (ws / "params.yaml").write_text((ws / "params.yaml").read_text() + f"tracking:\n  uri: '{uri}'\n")
            before = snapshot(ws)
            assert_one_error_line(run_stage_here("train_reference", ws), *needles)
            assert snapshot(ws) == before
    finally:
        server.shutdown()


@pytest.mark.slow
def test_tracking_server_killed_mid_run_then_rerun(prepared, tmp_path):
    from tests.test_tracking_server import start_server

    backend = f"sqlite:///{tmp_path / 'server.db'}"
    server, uri = start_server(backend, tmp_path / "artifacts")
    ws = copy_of(prepared, tmp_path, **SLOW_TRAIN)
    (ws / "params.yaml").write_text((ws / "params.yaml").read_text() + f"tracking:\n  uri: {uri}\n")
    before = snapshot(ws)
    proc = popen_stage("train_reference", ws)
    wait_for_state(proc, ws, "train_reference")
    os.killpg(server.pid, signal.SIGKILL)  # the server and its workers die mid-run
    server.wait()
    _, err = proc.communicate(timeout=300)
    assert_one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err),
                          f"MLflow tracking at {uri} failed during the run", "rerun the stage")
    assert snapshot(ws) == {k: v for k, v in snapshot(ws).items() if ".synthgap" in k} | before

    server, uri2 = start_server(backend, tmp_path / "artifacts")
    try:
        (ws / "params.yaml").write_text((ws / "params.yaml").read_text().replace(uri, uri2))
        rerun = run_stage("train_reference", ws)
        assert rerun.returncode == 0, rerun.stderr
        assert "resuming from" in rerun.stdout + rerun.stderr  # the key ignores tracking.uri
        statuses = [r.info.status for r in runs_of(ws, uri=uri2)]
        assert "RUNNING" not in statuses and "KILLED" in statuses  # the run the dead server could not close
    finally:
        os.killpg(server.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ signals
def test_sigterm_ends_with_one_line_marks_the_run_killed_and_keeps_the_state(prepared, tmp_path):
    """The signal goes to the stage's whole process group, as a Ctrl-C or a job controller sends it: the
    stage's MLflow process (synthgap.tracking.StoreProcess) gets it too, and must live on to mark the run
    KILLED, then end with the stage."""
    ws = copy_of(prepared, tmp_path, **SLOW_TRAIN)
    before = snapshot(ws)
    proc = popen_stage("train_reference", ws, start_new_session=True)  # its own group, as a terminal's job
    wait_for_state(proc, ws, "train_reference")
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    line = assert_one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, "", err),
                                 "interrupted by SIGTERM", "no output was replaced", "rerun the stage to resume from")
    assert str(ws / ".synthgap" / "state" / "train_reference-") in line
    assert {k: v for k, v in snapshot(ws).items() if ".synthgap" not in k} == before
    newest = max(runs_of(ws), key=lambda r: r.info.start_time)
    assert newest.info.status == "KILLED" and newest.info.run_name.startswith("train_reference")
    deadline = time.time() + 10
    while time.time() < deadline:  # nothing of the group is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("a process of the stage's group outlived it")


def test_sigkill_then_rerun_closes_the_orphan_run_and_equals_an_uninterrupted_run(prepared, tmp_path):
    reference = copy_of(prepared, tmp_path / "reference", **SLOW_TRAIN)
    assert run_stage_here("train_reference", reference).returncode == 0
    killed = copy_of(prepared, tmp_path / "killed", **SLOW_TRAIN)
    proc = run_killed("train_reference", killed, "synthgap.train.classifier", 3)  # epochs 1-2 saved, 3 lost
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "RUNNING" in [r.info.status for r in runs_of(killed)]

    resumed = run_stage_here("train_reference", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert "RUNNING" not in [r.info.status for r in runs_of(killed)]
    assert "KILLED" in [r.info.status for r in runs_of(killed)]
    a, b = (torch.load(ws / "models" / "train_reference" / "classifier.pt", weights_only=True) for ws in (reference, killed))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


# ----------------------------------------------------------------------------------------- run_main lines
@pytest.mark.parametrize("state", [False, True])
def test_an_interrupt_says_whether_a_rerun_resumes(tmp_path, monkeypatch, capsys, state):
    from synthgap.errors import run_main

    (tmp_path / ".git").mkdir()  # the workspace and repository root
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "train_reference.py")])
    kept = tmp_path / ".synthgap" / "state" / "train_reference-00ff.pt"

    def main():
        atomic_write_text(tmp_path / "reports" / "out.txt", "new")
        if state:
            atomic_write_text(kept, "state")
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_main(main)
    line = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and line.count("\n") == 0
    assert line.startswith("synthgap: error: interrupted by SIGINT; no output was replaced")
    assert line.endswith(f"rerun the stage to resume from {kept}" if state else "a rerun starts the stage over")
    assert not (tmp_path / "reports" / "out.txt").exists()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_stage_process_ends_without_the_interpreter_teardown_and_keeps_its_outputs(tmp_path):
    """A script whose ``main`` succeeds ends at run_main with status 0, its stdout flushed and its staged
    output in place, before atexit handlers (the interpreter's teardown) run; the same ``main`` called from
    another program returns to it."""
    (tmp_path / ".git").mkdir()
    script = tmp_path / "train_reference.py"
    script.write_text(
        "import atexit, sys\n"
        "from synthgap.errors import run_main\n"
        "from synthgap.paths import atomic_write_text\n"
        "atexit.register(lambda: print('teardown ran', flush=True))\n"
        "def main():\n"
        "    atomic_write_text('reports/out.txt', 'new')\n"
        "    print('stage printed')  # block-buffered: stdout is a pipe\n"
        "if __name__ == '__main__':\n"
        "    run_main(main)\n"
        "else:\n"
        "    run_main(lambda: print('inside a host'))\n"
        "    print('returned to the host')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    own = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert own.returncode == 0, own.stderr
    assert own.stdout == "stage printed\n"
    assert (tmp_path / "reports" / "out.txt").read_text() == "new"
    hosted = subprocess.run([sys.executable, "-c", "import train_reference"], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}"}, timeout=120)
    assert hosted.returncode == 0, hosted.stderr
    assert hosted.stdout == "inside a host\nreturned to the host\nteardown ran\n"
