"""synthgap.launch: ``python -m stages <name>`` runs the stage as ``python -m stages.<name>`` would, in a process
forked from a launch server; the same streams, status, signals and results, in either mode."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

PROBE = '''
import os, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), "preloaded", "torch" in sys.modules, flush=True)
print("to stderr", file=sys.stderr)
what = sys.argv[1]
if what == "torch":  # OpenMP in the stage after the fork: the same numbers as a process of its own, no hang
    import torch
    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 300, generator=g)
    print("sum", repr(float((a @ a).relu().sum())))
elif what == "stdin":
    print("read", sys.stdin.read().strip())
elif what == "sleep":  # note the signal that ends it, then die by it
    import signal, time
    def note(signum, frame):
        open(sys.argv[3], "w").write(str(signum))
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, note)
    open(sys.argv[2], "w").write(str(os.getpid()))
    time.sleep(60)
elif what == "raise":
    raise ValueError("boom")
elif what == "exit":
    sys.exit(sys.argv[2] if not sys.argv[2].isdigit() else int(sys.argv[2]))
'''


@pytest.fixture
def workspace(tmp_path):
    """A package ``pkg`` whose ``__main__`` is the launcher (as ``stages/__main__.py``), with one module,
    ``probe``; and a temp folder of its own for the servers' sockets."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text("from synthgap.launch import main\nmain('pkg')\n")
    (tmp_path / "pkg" / "probe.py").write_text(PROBE)
    sockets = Path(tempfile.mkdtemp(prefix="sg-", dir="/tmp"))  # a socket's path holds at most 107 bytes
    (tmp_path / "tmp").symlink_to(sockets)
    yield tmp_path
    subprocess.run(["pkill", "-f", str(sockets)], check=False)  # its launch server
    shutil.rmtree(sockets, ignore_errors=True)


def run(workspace: Path, *args: str, mode: str = "fork", **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str((workspace / "tmp").resolve()), "X": "x", "SYNTHGAP_LAUNCH": mode}
    return subprocess.run([sys.executable, "-m", "pkg", "probe", *args], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_a_module_runs_the_same_forked_as_in_a_process_of_its_own(workspace):
    for args in (["plain", "a b"], ["torch"], ["raise"], ["exit", "3"], ["exit", "a message"]):
        inline, forked = run(workspace, *args, mode="inline"), run(workspace, *args)
        assert "preloaded False" in inline.stdout and "preloaded True" in forked.stdout  # torch came from the server
        assert forked.returncode == inline.returncode
        assert forked.stdout.replace("preloaded True", "preloaded False") == inline.stdout
        assert forked.stderr == inline.stderr
    plain = run(workspace, "plain", "a b")
    assert plain.returncode == 0 and f"argv ['plain', 'a b'] cwd {workspace} X x" in plain.stdout
    assert plain.stderr == "to stderr\n"
    assert run(workspace, "raise").stderr.rstrip().endswith("ValueError: boom")
    assert run(workspace, "exit", "3").returncode == 3
    message = run(workspace, "exit", "a message")
    assert message.returncode == 1 and message.stderr.endswith("a message\n")
    assert "sum" in run(workspace, "torch").stdout
    assert run(workspace, "stdin", input="hello\n").stdout.endswith("read hello\n")  # the client's own stdin


def _pid_when_written(path: Path) -> int:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, "the stage never started"
        time.sleep(0.05)
    return int(path.read_text())


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_signal_to_the_command_reaches_the_stage(workspace, signum):
    """Ctrl-C, DVC's SIGTERM and a closed terminal's SIGHUP are forwarded to the stage, and the command dies as
    the stage did; a stage whose command was killed outright gets SIGTERM."""
    env = {**os.environ, "TMPDIR": str((workspace / "tmp").resolve())}
    pid_file, got_file = workspace / "pid", workspace / "got"
    client = subprocess.Popen([sys.executable, "-m", "pkg", "probe", "sleep", str(pid_file), str(got_file)],
                              cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = _pid_when_written(pid_file)
    assert stage != client.pid
    client.send_signal(signum)
    client.communicate(timeout=30)
    assert client.returncode == -signum
    assert _gone(stage)
    assert int(got_file.read_text()) == (signal.SIGTERM if signum == signal.SIGKILL else signum)


def test_the_server_key_follows_the_environment_but_not_the_stage_name(monkeypatch, tmp_path):
    from synthgap.launch import server_address

    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "train_reference")
    first = server_address()
    monkeypatch.setenv("DVC_STAGE", "cas_final")
    assert server_address() == first  # every stage of a run shares the server
    monkeypatch.setenv("OMP_NUM_THREADS", str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1))
    assert server_address() != first  # a server that imported torch under other settings is not used


def test_an_idle_server_removes_its_socket_and_exits(tmp_path):
    address = tmp_path / "l.sock"
    ready_read, ready_write = os.pipe()
    server = subprocess.Popen([sys.executable, "-c", "import pathlib; from synthgap.launch import serve; "
                               f"serve(pathlib.Path({str(address)!r}), {ready_write}, idle_s=0.5)"],
                              pass_fds=(ready_write,), cwd=REPO)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1" and address.exists()
    assert server.wait(timeout=30) == 0
    assert not address.exists()


def test_an_unknown_stage_is_one_line_naming_the_stages(workspace):
    proc = subprocess.run([sys.executable, "-m", "pkg", "prob"], cwd=workspace, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str((workspace / "tmp").resolve())}, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "synthgap: error: there is no stage 'prob' (pkg.prob); the stages: probe\n"
