"""Per-user local servers that the stages of a ``dvc repro`` share: the tracking daemon (:mod:`synthgap.tracking`)
and the launch server (:mod:`synthgap.launch`).

A server listens on a Unix socket ``<tmp>/synthgap-<uid>/<name>-<key>.sock`` in a folder only this user can
enter. The key hashes whatever must match for a client to use that server (the Python, the server's code, the
parts of the environment it depends on), so a client never talks to a server started from other code. The first
client starts it (:func:`connect_or_start`): under a file lock, so clients starting together start one; in a
session of its own, so the signals a stage's process group gets (Ctrl-C, SIGTERM) are not its; and it waits
until the server says it is listening. A server exits by itself once idle (:class:`Listener`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def private_folder() -> Path:
    """``<tmp>/synthgap-<uid>``, created if missing. Raises OSError where it is not a folder private to this user."""
    folder = Path(tempfile.gettempdir()) / f"synthgap-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(f"{folder} is not a folder private to this user")
    return folder


def server_address(name: str, key: hashlib._Hash) -> Path:
    """The socket of server ``name`` for ``key`` (a hash of everything a client must share with the server)."""
    return private_folder() / f"{name}-{key.hexdigest()[:16]}.sock"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if missing), between processes and threads alike."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(address: Path) -> socket.socket | None:
    """A connection to the server at ``address``; None where none answers (no socket file, or a dead server's)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(address))
        return sock
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None


def connect_or_start(address: Path, argv: list[str], env: dict[str, str], what: str,
                     timeout: float = 60.0) -> socket.socket:
    """A connection to the server at ``address``, started first with ``argv + [address, ready_fd]`` if none
    answers. ``what`` names the server in errors. Raises OSError if it cannot be reached or started."""
    sock = connect(address)
    if sock is not None:
        return sock
    with file_lock(address.with_suffix(".lock")):
        sock = connect(address)
        if sock is not None:
            return sock
        address.unlink(missing_ok=True)
        log_path = address.with_suffix(".log")
        ready_read, ready_write = os.pipe()
        try:
            with open(log_path, "ab") as log:
                subprocess.Popen([*argv, str(address), str(ready_write)], stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=log, env=env, pass_fds=(ready_write,), start_new_session=True, cwd="/")
            os.close(ready_write)
            ready_write = -1
            if not select.select([ready_read], [], [], timeout)[0] or os.read(ready_read, 1) != b"1":
                raise OSError(f"{what} did not start (see {log_path})")
        finally:
            os.close(ready_read)
            if ready_write >= 0:
                os.close(ready_write)
        sock = connect(address)
        if sock is None:
            raise OSError(f"{what} does not answer at {address}")
        return sock


class Listener:
    """A server's listening socket at ``address``, bound at once: clients that connect while the server is still
    getting ready (importing what it serves with) wait in the queue instead of starting another server.
    :meth:`ready` tells the starter."""

    def __init__(self, address: Path):
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.bind(str(address))
        self._inode = address.stat().st_ino
        self.socket.listen(64)

    @staticmethod
    def ready(ready_fd: int) -> None:
        """Tell the starter waiting on ``ready_fd`` that the server answers (if it is still there)."""
        try:
            os.write(ready_fd, b"1")
        except BrokenPipeError:  # the starter is gone; the next client finds the socket
            pass
        os.close(ready_fd)

    def accept(self, timeout: float) -> socket.socket | None:
        """The next connection (blocking), or None after ``timeout`` seconds without one."""
        self.socket.settimeout(timeout)
        try:
            conn = self.socket.accept()[0]
        except (TimeoutError, BlockingIOError):
            return None
        conn.setblocking(True)
        return conn

    def close(self, handle: Callable[[socket.socket], None]) -> None:
        """Stop listening: the socket file goes first (if still this server's), so new clients start a new
        server; connections already queued are still given to ``handle``."""
        try:
            if self.address.stat().st_ino == self._inode:
                self.address.unlink()
        except FileNotFoundError:
            pass
        time.sleep(0.2)  # a connect that found the file just before it went is queued by now
        self.socket.setblocking(False)
        while True:
            try:
                conn = self.socket.accept()[0]
            except (BlockingIOError, TimeoutError):
                break
            conn.setblocking(True)
            handle(conn)
        self.socket.close()
