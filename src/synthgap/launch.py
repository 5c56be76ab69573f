"""Start stages without paying for their imports: ``python -m stages <name> [args]``.

Every stage is a process of its own, and importing torch, NumPy, SciPy, Matplotlib and pydantic costs
1.5-2.5 s of a 2-core CPU before a stage does anything: about a minute of a ``dvc repro``. ``python -m stages
<name> [args]`` (the commands in ``dvc.yaml``) runs ``stages.<name>`` exactly as ``python -m stages.<name>
[args]`` would, in a process forked from the *launch server*, a process of this user's that has imported
:data:`PRELOAD` once and waits on a Unix socket (:mod:`synthgap.servers`) for stages to run:

- the command itself is a thin client: it hands the server its arguments, working directory, environment,
  umask, ``sys.path`` and standard streams (the file descriptors themselves, so pipes, terminals and progress
  bars behave as in a process of its own), forwards the signals it gets (Ctrl-C, DVC's SIGTERM, SIGHUP) to
  the stage's process group, and exits with the stage's status (dying by the same signal where the stage did);
- the server forks a supervisor per stage, which forks the stage and waits for it; a stage whose client dies
  is sent SIGTERM, and SIGKILL :data:`GRACE_S` later if its process group is still there;
- nothing of synthgap or of the stage is imported before the fork, so an edit takes effect at the next stage.

The server's key (:func:`server_address`) covers the Python and its flags, this module, the preloaded
packages' install, the environment (except ``DVC_STAGE`` and the shell's own variables) and the process's
CPU affinity, priority and resource limits (which a forked stage inherits from the server), so a stage never
runs in a server that imported other code or runs under other settings; it exits after :data:`IDLE_S` without
a stage. A server that ends before it has taken a request leaves the stage to run in the client's process. Where no server can be used (``SYNTHGAP_LAUNCH=inline``, no ``fork``, no private socket folder), the
stage runs in this process: ``python -m stages <name>`` is then ``python -m stages.<name>``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import resource
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from synthgap import servers

PRELOAD = ("numpy", "torch", "scipy.special", "scipy.stats", "scipy.optimize", "matplotlib.pyplot", "pydantic", "yaml",
           "tqdm", "PIL.Image")  # what most stages import from outside synthgap, before the server answers
PRELOAD_LATER = ("diffusers:AutoencoderKL", "diffusers:UNet2DConditionModel", "diffusers:StableDiffusionPipeline",
                 "diffusers:StableDiffusionImg2ImgPipeline", "diffusers:UniPCMultistepScheduler",
                 "transformers:CLIPTextModel", "transformers:CLIPVisionModelWithProjection",
                 "transformers:CLIPTokenizer", "peft:LoraConfig", "peft.tuners.lora.layer", "peft.utils")
"""What the Real-Fake stages import (about 4 s): one at a time, while a stage has been running for
:data:`BUSY_S` (under ``dvc repro`` no other stage is about to start then)."""
BUSY_S = 2.0
IDLE_S = 30.0  # the server exits once no stage has run for this long
GRACE_S = 10.0  # after the SIGTERM to a stage whose client died, SIGKILL to its process group
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SHELL_ENV = ("DVC_STAGE", "_", "PWD", "OLDPWD", "SHLVL")  # differ between the stages of one run, read by no import


def main(package: str) -> None:
    """``python -m <package> <name> [args]``: run module ``<package>.<name>`` with ``args``."""
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(f"usage: python -m {package} <stage> [args]  (runs {package}.<stage>; e.g. python -m {package} "
                 "train_reference)")
    module = f"{package}.{sys.argv[1]}"
    if importlib.util.find_spec(module) is None:
        folder = Path(importlib.util.find_spec(package).origin).parent
        known = sorted(p.stem for p in folder.glob("[a-z]*.py") if p.stem != "common")
        sys.exit(f"synthgap: error: there is no stage '{sys.argv[1]}' ({module}); the stages: {', '.join(known)}")
    code = launch(module, sys.argv[2:])
    if code < 0:
        _exit(code)  # by that signal
    sys.exit(code)


def launch(module: str, args: list[str]) -> int:
    """Run ``module`` as ``__main__`` with ``args`` in a process forked from the launch server (in this process
    where none can be used); the exit status."""
    if os.environ.get("SYNTHGAP_LAUNCH", "fork") == "inline" or not hasattr(os, "fork"):
        return run_inline(module, args)
    try:
        sock = servers.connect_or_start(
            server_address(), [sys.executable, *subprocess._args_from_interpreter_flags(), "-m", "synthgap.launch",
                               "--serve"], dict(os.environ), "the launch server")
    except OSError:
        return run_inline(module, args)
    with sock:
        return _client(sock, module, args)


def run_inline(module: str, args: list[str]) -> int:
    """Run ``module`` as ``__main__`` in this process, as ``python -m <module> args`` would; the exit status
    (negative: the signal to die by, SIGINT after Ctrl-C). An uncaught exception is printed from the module's
    own frame on."""
    sys.argv = [sys.argv[0], *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        return _exit_code(stop)
    except BaseException as err:  # noqa: BLE001 - reported as the interpreter reports it
        import traceback

        spec = importlib.util.find_spec(module)
        frames = err.__traceback__
        while frames is not None and spec is not None and frames.tb_frame.f_code.co_filename != spec.origin:
            frames = frames.tb_next
        traceback.print_exception(type(err), err, frames or err.__traceback__)
        return -signal.SIGINT if isinstance(err, KeyboardInterrupt) else 1
    return 0


def server_address() -> Path:
    """The launch server's socket for this Python, its flags, this code, the preloaded packages and this
    environment. Raises OSError where the socket folder is not private."""
    key = hashlib.sha256(f"{sys.executable}\0{sys.prefix}\0{subprocess._args_from_interpreter_flags()}".encode())
    here = Path(__file__).resolve().parent
    for name in ("__init__.py", "launch.py", "servers.py"):  # what the server imports of synthgap
        key.update((here / name).read_bytes())
    for top in sorted({name.split(".")[0].split(":")[0] for name in PRELOAD + PRELOAD_LATER}):
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.origin:
            key.update(f"\0{spec.origin}:{os.stat(spec.origin).st_mtime_ns}".encode())
    for name in sorted(set(os.environ) - set(_SHELL_ENV)):
        key.update(f"\0{name}={os.environ[name]}".encode())
    key.update(repr(_inherited()).encode())
    return servers.server_address("launch", key)


def _inherited() -> tuple:
    """What a forked stage inherits from the server rather than from its client: CPU affinity, priority
    (nice) and resource limits."""
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    limits = [(name, resource.getrlimit(getattr(resource, name))) for name in sorted(dir(resource))
              if name.startswith("RLIMIT_")]
    return affinity, os.getpriority(os.PRIO_PROCESS, 0), limits


# ------------------------------------------------------------------------------------------------ the client
def _client(sock: socket.socket, module: str, args: list[str]) -> int:
    umask = os.umask(0)
    os.umask(umask)
    ignored = [int(s) for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN]  # e.g. SIGHUP under nohup
    blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))  # what a child would inherit
    request = json.dumps({"module": module, "args": args, "argv0": sys.argv[0], "cwd": os.getcwd(),
                          "env": dict(os.environ), "path": sys.path, "umask": umask, "ignored": ignored,
                          "blocked": blocked}).encode()
    try:
        socket.send_fds(sock, [struct.pack("!I", len(request))], [0, 1, 2])
    except OSError:  # a standard stream is closed: nothing to hand over
        return run_inline(module, args)
    received: list[int] = []  # the signals this process got

    def forward(signum, _frame) -> None:
        received.append(signum)
        try:
            sock.send(bytes([signum]))
        except OSError:
            pass

    for signum in FORWARDED:
        if signum not in ignored:
            signal.signal(signum, forward)
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # a signal's byte goes after the request
        try:
            sock.sendall(request)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        taken = _receive(sock, 1)
    except OSError:
        taken = b""
    if not taken:  # the server ended before it took the request: nothing has run, so it runs here
        for signum in FORWARDED:
            if signum not in ignored:
                signal.signal(signum, _default_handler(signum))
        return -received[0] if received else run_inline(module, args)
    answer = _receive(sock, 4)
    if len(answer) < 4:
        print(f"{module}: the launch server's supervisor ended without a status", file=sys.stderr)
        return 1
    return struct.unpack("!i", answer)[0]  # negative: the stage died by that signal, and so will this process


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# ------------------------------------------------------------------------------------------------ the server
def serve(address: Path, ready_fd: int, idle_s: float = IDLE_S) -> None:
    """The launch server: import :data:`PRELOAD`, listen at ``address``, tell the starter on ``ready_fd``, fork
    a supervisor per connection, import :data:`PRELOAD_LATER` while stages run, and exit once no stage has run
    for ``idle_s``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = servers.Listener(address)
    for name in PRELOAD:
        _preload(name)
    listener.ready(ready_fd)
    supervisors: dict[int, float] = {}  # pid: start time
    later, idle_since = list(PRELOAD_LATER), time.monotonic()

    def start(conn: socket.socket) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                listener.socket.close()
                _supervise(conn)  # never returns
            finally:
                os._exit(1)
        conn.close()
        supervisors[pid] = time.monotonic()

    while True:
        busy = any(time.monotonic() - started > BUSY_S for started in supervisors.values())
        conn = listener.accept(timeout=0.05 if later and busy else 1.0)
        if conn is not None:
            start(conn)
        elif later and busy:
            _preload(later.pop(0))
        for pid in list(supervisors):
            if os.waitpid(pid, os.WNOHANG)[0]:
                del supervisors[pid]
                idle_since = time.monotonic()
        if conn is None and not supervisors and time.monotonic() - idle_since > idle_s:
            break
    listener.close(start)
    for pid in supervisors:
        os.waitpid(pid, 0)
    os._exit(0)


def _preload(name: str) -> None:
    """Import module ``name`` (``module:attribute``: and that attribute, for packages that import lazily). A
    failure is left to the stage that needs the module to report."""
    module, _, attribute = name.partition(":")
    try:
        imported = importlib.import_module(module)
        if attribute:
            getattr(imported, attribute)
    except Exception:  # noqa: BLE001,S110 - not installed, or broken: the stage says so when it imports it
        pass


def _supervise(conn: socket.socket) -> None:
    """A stage's supervisor: read the request, fork the stage, forward signals, report its status."""
    code = 1
    try:
        header, fds, _, _ = socket.recv_fds(conn, 4, 3)
        request = json.loads(_receive(conn, struct.unpack("!I", header)[0]))
        conn.sendall(b"+")  # taken: from here on the stage runs here
        # the forwarded signals wait (blocked) until the stage has its handlers: a Ctrl-C is never lost
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the server ignores it, and an ignored signal is dropped
        pid = os.fork()
        if pid == 0:
            conn.close()
            _stage(request, fds)  # never returns
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor itself, as the server
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        try:
            os.setpgid(pid, pid)  # here too: a signal forwarded before the stage ran its setpgid reaches it
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        code = _wait(conn, pid)
        conn.sendall(struct.pack("!i", code))
    except (OSError, ValueError, struct.error):  # the client is gone, or sent something else
        pass
    os._exit(0)


def _wait(conn: socket.socket, pid: int) -> int:
    """Wait for the stage ``pid``, forwarding the signal numbers the client sends to its process group,
    SIGTERM when the client is gone and SIGKILL :data:`GRACE_S` after that; its exit code (negative: killed
    by that signal)."""
    try:
        exited = os.pidfd_open(pid)  # readable once the stage has ended (Linux 5.3+)
    except (AttributeError, OSError):
        exited = None
    watched = [conn] if exited is None else [conn, exited]
    kill_at = None  # the client is gone: when to SIGKILL what is left of the stage
    while True:
        if kill_at is not None and os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            # the stage's main process ended after the client: unreaped, its pid still names the process group,
            # so what it started and left behind gets the SIGKILL too
            time.sleep(max(0.0, kill_at - time.monotonic()))
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            kill_at = None
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        timeout = 0.05 if exited is None else None if kill_at is None else max(0.0, kill_at - time.monotonic())
        ready = select.select(watched, [], [], timeout)[0]
        signals = b""
        if conn in ready:
            try:
                signals = conn.recv(64)
            except OSError:  # a client that closed with the acknowledgement unread: a reset, not an EOF
                signals = b""
            if not signals:  # the client died: end the stage as a killed command would end
                watched.remove(conn)
                signals, kill_at = bytes([signal.SIGTERM]), time.monotonic() + GRACE_S
        elif kill_at is not None and time.monotonic() >= kill_at:
            signals, kill_at = bytes([signal.SIGKILL]), None
        for signum in signals:
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                pass


def _stage(request: dict, fds: list[int]) -> None:
    """The stage process: become the client's process (streams, directory, environment, arguments, signal
    handlers), run the module, exit as Python would. It starts with the forwarded signals blocked."""
    try:
        os.setpgid(0, 0)  # a process group of its own: forwarded signals reach the processes the stage starts too
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        sys.argv = [request["argv0"]]
        for signum in FORWARDED:  # as in a process the client started: default, or ignored where it ignores them
            signal.signal(signum, signal.SIG_IGN if signum in request["ignored"] else _default_handler(signum))
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=stream.isatty())
        if "numpy" in sys.modules:  # a fresh process seeds NumPy's global generator from the OS, not the server's state
            sys.modules["numpy"].random.seed()
    except BaseException:  # noqa: BLE001 - the client's stderr is the one place to say it
        import traceback

        traceback.print_exc()
        os._exit(1)
    code = 1
    try:  # the client's mask, as a child of it; a signal held back since the fork is delivered here
        signal.pthread_sigmask(signal.SIG_SETMASK, request["blocked"])
        code = run_inline(request["module"], request["args"])
    except KeyboardInterrupt:  # a Ctrl-C before the module ran: die by it, as the module would have
        code = -signal.SIGINT
    finally:
        _exit(code)


def _default_handler(signum: int):
    """What a new Python process does with ``signum``: KeyboardInterrupt for SIGINT, the default action otherwise."""
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


def _exit(code: int) -> None:
    """Exit as the interpreter does (wait for threads, run atexit handlers, flush), with ``code``; a negative
    code: by that signal."""
    import atexit
    import threading

    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if code < 0:
            try:
                signal.signal(-code, signal.SIG_DFL)  # SIGKILL and SIGSTOP cannot be caught: nothing to reset
            except (OSError, ValueError):
                pass
            resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))  # the stage's own core is enough
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [-code])
            os.kill(os.getpid(), -code)
        os._exit(code)


def _exit_code(stop: SystemExit) -> int:
    """The status ``sys.exit(value)`` gives a process (a message is printed and gives 1)."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code & 0xFF
    print(stop.code, file=sys.stderr)
    return 1


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(Path(sys.argv[2]), int(sys.argv[3]))
