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
import os, signal, sys
handlers = [getattr(h, "name", getattr(h, "__name__", h)) for h in map(signal.getsignal, (signal.SIGINT, signal.SIGTERM, signal.SIGHUP))]
blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), "preloaded", "torch" in sys.modules, flush=True)
print("handlers", handlers, "blocked", blocked, flush=True)
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
elif what == "die":  # by a signal of its own
    os.kill(os.getpid(), int(sys.argv[2]))
elif what == "stubborn":  # ignores SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(sys.argv[2], "w").write(str(os.getpid()))
    import time
    time.sleep(120)
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
    nohup = {"preexec_fn": lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)}
    masked = {"preexec_fn": lambda: signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])}
    for args, kwargs in ((["plain", "a b"], {}), (["torch"], {}), (["raise"], {}), (["exit", "3"], {}),
                         (["exit", "a message"], {}), (["die", str(int(signal.SIGKILL))], {}), (["plain"], nohup),
                         (["plain"], masked)):
        inline, forked = run(workspace, *args, mode="inline", **kwargs), run(workspace, *args, **kwargs)
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
    assert run(workspace, "die", str(int(signal.SIGKILL))).returncode == -signal.SIGKILL  # dies as the stage died
    handlers = "handlers ['default_int_handler', 'SIG_DFL', '{}'] blocked []"
    assert handlers.format("SIG_DFL") in plain.stdout  # nothing of the server's SIG_IGN or signal mask
    assert handlers.format("SIG_IGN") in run(workspace, "plain", **nohup).stdout  # as the client had it
    assert f"blocked [{int(signal.SIGUSR1)}]" in run(workspace, "plain", **masked).stdout  # the client's signal mask
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


def test_a_stage_whose_command_was_killed_is_killed_after_a_grace_period(workspace):
    """SIGTERM first; a stage that ignores it is sent SIGKILL ``GRACE_S`` later."""
    from synthgap.launch import GRACE_S

    env = {**os.environ, "TMPDIR": str((workspace / "tmp").resolve())}
    pid_file = workspace / "pid"
    client = subprocess.Popen([sys.executable, "-m", "pkg", "probe", "stubborn", str(pid_file)], cwd=workspace, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = _pid_when_written(pid_file)
    client.kill()
    client.wait(timeout=30)
    assert not _gone(stage, within=GRACE_S / 2)  # SIGTERM alone does not end it
    assert _gone(stage, within=GRACE_S + 10)


def _serve(address: Path, idle_s: float = 30.0) -> subprocess.Popen:
    ready_read, ready_write = os.pipe()
    server = subprocess.Popen([sys.executable, "-c", "import pathlib; from synthgap.launch import serve; "
                               f"serve(pathlib.Path({str(address)!r}), {ready_write}, idle_s={idle_s})"],
                              pass_fds=(ready_write,), cwd=REPO)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1" and address.exists()
    os.close(ready_read)
    return server


def _send_request(sock, fds: list[int], **fields) -> None:
    """Send a client's request as synthgap.launch's client does (header with the standard streams, then the JSON)."""
    import json
    import socket
    import struct

    request = json.dumps({"module": "", "args": [], "argv0": "x", "cwd": "/", "env": {}, "path": sys.path,
                          "umask": 0o22, "ignored": [], "blocked": [], **fields}).encode()
    socket.send_fds(sock, [struct.pack("!I", len(request))], fds)
    sock.sendall(request)


def test_a_stage_that_cannot_start_reports_failure(tmp_path):
    """A request the stage process cannot take on (here a working directory that is gone) ends with status 1
    and the reason on the client's stderr, not with a success."""
    import socket
    import struct

    server = _serve(tmp_path / "l.sock")
    err = tmp_path / "err"
    with open(err, "w") as stderr, socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(tmp_path / "l.sock"))
        _send_request(sock, [0, stderr.fileno(), stderr.fileno()], module="json.tool", cwd=str(tmp_path / "gone"))
        answer = sock.recv(1) + b"".join(iter(lambda: sock.recv(4), b""))
    server.terminate()
    server.wait(timeout=30)
    assert answer[:1] == b"+" and struct.unpack("!i", answer[1:]) == (1,)
    assert f"FileNotFoundError: [Errno 2] No such file or directory: '{tmp_path / 'gone'}'" in err.read_text()


def test_a_server_that_ends_before_taking_the_request_leaves_the_stage_to_the_command(workspace):
    """The command connects to a server that closes the connection unanswered: the stage runs in the command."""
    import socket
    import threading

    env = {**os.environ, "TMPDIR": str((workspace / "tmp").resolve()), "X": "x", "SYNTHGAP_LAUNCH": "fork"}
    address = subprocess.run([sys.executable, "-c", "from synthgap.launch import server_address; print(server_address())"],
                             env=env, cwd=workspace, capture_output=True, text=True, check=True).stdout.strip()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    listener.listen(1)

    def hang_up() -> None:
        conn = listener.accept()[0]
        conn.recv(1 << 16)
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    proc = subprocess.run([sys.executable, "-m", "pkg", "probe", "plain"], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120)
    thread.join(timeout=30)
    listener.close()
    assert proc.returncode == 0 and "preloaded False" in proc.stdout


def test_the_server_key_follows_the_environment_but_not_the_stage_name(monkeypatch, tmp_path):
    import resource

    from synthgap.launch import server_address

    real_getrlimit = resource.getrlimit
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "train_reference")
    first = server_address()
    monkeypatch.setenv("DVC_STAGE", "cas_final")
    assert server_address() == first  # every stage of a run shares the server
    monkeypatch.setenv("OMP_NUM_THREADS", str(int(os.environ.get("OMP_NUM_THREADS", "1")) + 1))
    second = server_address()
    assert second != first  # a server that imported torch under other settings is not used
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    monkeypatch.setattr("resource.getrlimit", lambda which: (soft - 1, hard) if which == resource.RLIMIT_NOFILE
                        else real_getrlimit(which))
    assert server_address() != second  # nor one whose limits a forked stage would inherit


def test_an_idle_server_removes_its_socket_and_exits(tmp_path):
    address = tmp_path / "l.sock"
    server = _serve(address, idle_s=0.5)
    assert server.wait(timeout=30) == 0
    assert not address.exists()


def test_an_unknown_stage_is_one_line_naming_the_stages(workspace):
    proc = subprocess.run([sys.executable, "-m", "pkg", "prob"], cwd=workspace, capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str((workspace / "tmp").resolve())}, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "synthgap: error: there is no stage 'prob' (pkg.prob); the stages: probe\n"


def test_a_command_gone_before_reading_the_acknowledgement_still_ends_its_stage(workspace):
    """A client that closes with the supervisor's acknowledgement unread (a reset, not an end of file) still
    gets its stage ended: SIGTERM, then SIGKILL for a stage that ignores it."""
    import socket

    from synthgap.launch import GRACE_S

    sockets = (workspace / "tmp").resolve()
    server = _serve(sockets / "l.sock")
    pid_file = workspace / "pid"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sockets / "l.sock"))
        _send_request(sock, [0, 1, 2], module="pkg.probe", args=["stubborn", str(pid_file)], cwd=str(workspace),
                      env=dict(os.environ), path=[str(workspace), *sys.path])
        stage = _pid_when_written(pid_file)
    try:
        assert _gone(stage, within=GRACE_S + 10)
    finally:
        server.terminate()
        server.wait(timeout=30)
