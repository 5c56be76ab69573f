"""MLflow and DVC-metrics bookkeeping shared by every stage.

A stage opens one :class:`StageRun`::

    with StageRun(params, experiment="common") as run:
        ...compute...
        run.log_metrics({"test_top1": 97.1})
        run.log_artifact(path_to_figure)

which, in order:

1. resolves the tracking URI (``tracking.uri``, or ``sqlite:///<repository root>/mlflow.db``; relative
   paths are anchored at the repository root, never at a DVC temporary workspace) and checks that it is
   reachable *before* any compute;
2. creates the database and the experiment under a file lock, so parallel runs (``dvc queue start -j N``)
   never race on the first migration or on experiment creation. Every MLflow call runs in another process
   (:class:`StoreProcess`): the tracking daemon that every stage of a ``dvc repro`` shares, which imports
   MLflow and opens each database once (about 2.3 s of CPU per stage otherwise, and in a thread of the stage
   it would hold the GIL against the stage's own work). For a local SQLite database the stage does not wait
   for the run to open; the first logging call does, and re-raises any error there;
3. starts a run named after the stage in the paper's experiment, logs the stage's params flattened, and
   tags the dataset, git commit and ``DVC_EXP_NAME``;
4. on success writes the metrics plus the MLflow run id to ``reports/metrics/<stage>.json`` (a DVC metrics
   file: DVC's run-cache may skip a stage, and then nothing would reach MLflow), moves the stage's staged
   outputs into place (``synthgap.staging``) and marks the run FINISHED; on failure marks it FAILED (KILLED
   on SIGINT/SIGTERM) and leaves every previous output alone.

Before any compute it also checks the stage's outputs can be written (``staging.preflight``) and marks KILLED
the runs of the same stage left RUNNING by a process of this host that is gone. A failure of the tracking
store at any point (server gone or not MLflow, a bad URI) ends the stage with one line.

Grid stages open one child run per grid point with :meth:`StageRun.child` (nested under the stage's run).
Nothing below the stage scripts talks to MLflow.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from synthgap import servers, staging
from synthgap.errors import UserError
from synthgap.paths import atomic_write_json, repo_root, workspace_root

EXPERIMENTS = ("common", "gafi", "realfake", "equivalence", "synthgap")
_MAX_BATCH = 100  # MLflow accepts at most 100 params per log_batch call


def resolve_tracking_uri(uri: str | None, root: Path | None = None) -> str:
    """An absolute tracking URI: null -> sqlite at the root; relative sqlite/file paths anchored at root."""
    root = (root or repo_root()).resolve()
    if uri is None:
        return f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        return f"sqlite:///{path if path.is_absolute() else root / path}"
    try:
        parsed = urllib.parse.urlparse(uri)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        raise UserError(f"tracking.uri '{uri}' is not a valid URI ({err})", "fix it, or set tracking.uri: null for the local database") from None
    if parsed.scheme in ("http", "https", "databricks", "postgresql", "mysql", "mssql") or parsed.scheme.startswith(("postgresql+", "mysql+")):
        return uri
    if parsed.scheme == "file":
        path = Path(parsed.path)
        return (path if path.is_absolute() else root / path).as_uri()
    if parsed.scheme == "":
        path = Path(uri)
        return (path if path.is_absolute() else root / path).as_uri()
    raise UserError(f"tracking.uri '{uri}' has an unsupported scheme", "use null, sqlite:///..., http(s)://... or a folder")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any compute, when the tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user-configured URL)
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(
                f"MLflow tracking server {uri} is unreachable ({reason})",
                "start it (mlflow server --host 127.0.0.1 ...) or set tracking.uri: null for the local database",
            ) from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir():
            raise UserError(f"the folder {parent} of tracking database {uri} does not exist", "create it or fix tracking.uri")


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock next to a local SQLite database (no-op for servers)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with servers.file_lock(Path(uri[len("sqlite:///") :]).with_suffix(".db.lock")):
        yield


def _quiet_mlflow_logs() -> None:
    for name in ("alembic", "mlflow", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def get_client(uri: str):
    """An MlflowClient for ``uri``; the local database is created (migrated) once, under the lock."""
    _quiet_mlflow_logs()
    from mlflow.tracking import MlflowClient

    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates and migrates a new SQLite database
    return client


# MLflow 3's UI opens an experiment on its GenAI overview (traces, token usage) unless the experiment is tagged
# as model development; then it opens on the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def relocate_artifacts(uri: str, old: str, new: str, name: str) -> None:
    """The workspace's own database moved with the workspace (a copied or moved clone): point the experiment
    and its runs at the artifact folder that moved along, ``<root>/mlartifacts/<name>``, so that new artifacts
    land there and the old ones stay readable. Only a location this code made (``.../mlartifacts/<name>``)
    is rewritten."""
    import sqlite3

    if not (old.startswith("file://") and old.endswith(f"/mlartifacts/{name}")):
        return
    with sqlite3.connect(uri[len("sqlite:///") :]) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE artifact_location = ?", (new, old))
        db.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE substr(artifact_uri, 1, ?) = ?",
                   (new, len(old) + 1, len(old) + 1, old + "/"))


def ensure_experiment(client, uri: str, name: str, root: Path) -> str:
    from mlflow.exceptions import MlflowException

    local = uri.startswith(("sqlite:", "file:"))
    location = (root / "mlartifacts" / name).as_uri() if local else None
    with _store_lock(uri):
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            if existing.tags.get("mlflow.experimentKind") is None:  # a database made by an earlier version
                client.set_experiment_tag(existing.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
            if uri == f"sqlite:///{root / 'mlflow.db'}" and existing.artifact_location != location:
                relocate_artifacts(uri, existing.artifact_location, location, name)
            return existing.experiment_id
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException:  # created meanwhile by another process on a server
            return client.get_experiment_by_name(name).experiment_id


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def dataset_inputs(processed: Path) -> list:
    """MLflow dataset inputs for the processed dataset (``prepare_data``'s output), one per split, so the UI's
    Dataset column names what a run trained and tested on: ``<name>-<split>``, the digest of ``dataset.npz``
    (MD5, as DVC hashes it), the split's size, and the split as the input's context. Empty before prepare_data."""
    import hashlib
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    info, arrays = processed / "info.json", processed / "dataset.npz"
    if not (info.is_file() and arrays.is_file()):
        return []
    meta = json.loads(info.read_text())
    md5 = hashlib.md5()
    with arrays.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            md5.update(block)
    inputs = []
    for split, counts in meta.get("class_counts", {}).items():
        dataset = Dataset(name=f"{meta.get('name', 'data')}-{split}", digest=md5.hexdigest()[:16], source_type="local",
                          source=arrays.resolve().as_uri(), profile=json.dumps({"num_rows": int(sum(counts))}))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)]))
    return inputs


def _as_param(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


@contextmanager
def tracking_fault(uri: str, when: str = "during the run") -> Iterator[None]:
    """Turn an error of the tracking store (server gone, not MLflow, refused request, disk full) into one
    line; ``when`` is "at the start" (before compute) or when it happened."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - MLflow raises MlflowException, requests' and OS errors alike
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if when == "at the start":
            fix = "point tracking.uri at a running MLflow tracking server (mlflow server ...) or set it to null"
        else:
            fix = ("no output of this stage was replaced; check the server or tracking.uri and rerun the stage "
                   "(training resumes from its last saved state; the run left RUNNING is closed then)")
        raise UserError(f"MLflow tracking at {uri} failed {when} ({detail})", fix) from err


class Store:
    """What a stage asks of the tracking store, with plain arguments (the MLflow entities are made here). It
    runs in the child process of :class:`StoreProcess`; every method's value is plain data too."""

    def __init__(self) -> None:
        self.client = None

    def open(self, uri: str, experiment: str, root: Path, stage: str, tags: dict[str, str],
             params: dict[str, Any], processed: Path) -> tuple[str, str]:
        """The stage's run: database and experiment created if needed, runs of the stage that a dead process
        left RUNNING closed, the run started with its tags, params and dataset inputs. (experiment id, run id)."""
        self.client = get_client(uri)
        experiment_id = ensure_experiment(self.client, uri, experiment, root)
        close_orphans(self.client, experiment_id, stage)
        commit = git_commit(root)
        if commit:
            tags = {**tags, "mlflow.source.git.commit": commit}
        run_id = self.create_run(experiment_id, stage, tags)
        self.log_params(run_id, params)
        inputs = dataset_inputs(processed)
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)
        return experiment_id, run_id

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        return self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _as_param(v)) for k, v in params.items()]
        for start in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _MAX_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], timestamp: int, step: int) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, v, timestamp, step) for k, v in metrics.items()]
        for start in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[start : start + _MAX_BATCH])

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, path, artifact_path)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def set_terminated(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def finished_children(self, uri: str, experiment: str, parent_run_id: str) -> list[dict[str, dict]]:
        """Params and metrics of the FINISHED child runs of ``parent_run_id`` in ``experiment``."""
        client = get_client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=10000)
        return [{"params": dict(r.data.params), "metrics": dict(r.data.metrics)}
                for r in runs if r.info.status == "FINISHED"]


class StoreProcess:
    """A connection to a :class:`Store` in another process: pickled ``(method, args)`` requests out,
    ``("ok", value)`` or ``("error", exception)`` answers back, in order. :meth:`submit` returns at once and
    :meth:`result` waits for the oldest answer, so the stage goes on while its run opens.

    The other process is the tracking daemon (:func:`connect_daemon`): one per user, Python and version of
    this module, shared by every stage of a ``dvc repro`` and by parallel ones, so MLflow is imported and each
    database's engine opened once instead of once per stage (about 2.3 s of CPU per stage, on a machine whose
    cores the stage's own threads use). Where a daemon cannot be used (no Unix sockets, no private temporary
    folder) it is a child process over pipes (:meth:`child`), as it was. Either way the store survives a
    SIGINT or SIGTERM sent to the stage's process group, so the stage can still mark its run KILLED."""

    def __init__(self, reader, writer, *, process: subprocess.Popen | None = None, sock: socket.socket | None = None):
        self._reader, self._writer = reader, writer
        self._process, self._sock = process, sock
        self._waiting = 0
        self._broken = False  # a request or answer cut off midway (an interrupt while waiting): start a new one

    @classmethod
    def child(cls) -> StoreProcess:
        """A store of its own: ``python -m synthgap.tracking`` over pipes; it ignores SIGINT and SIGTERM and
        exits as soon as its input closes (when the stage's process ends, or dies)."""
        process = subprocess.Popen([sys.executable, "-m", "synthgap.tracking"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=_store_env())
        return cls(process.stdout, process.stdin, process=process)

    def alive(self) -> bool:
        if self._broken:
            return False
        if self._process is not None:
            return self._process.poll() is None
        if self._waiting:
            return True
        try:  # no answer is due: anything readable is the daemon's end of the connection
            return not select.select([self._sock], [], [], 0)[0] or self._sock.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def submit(self, method: str, *args: Any) -> None:
        try:
            pickle.dump((method, args), self._writer, protocol=pickle.HIGHEST_PROTOCOL)
            self._writer.flush()
        except BaseException as err:
            self._broken = True
            if isinstance(err, (OSError, ValueError)):  # BrokenPipeError: the store is gone
                raise RuntimeError(self._ended()) from err
            raise
        self._waiting += 1

    def result(self) -> Any:
        try:
            status, value = pickle.load(self._reader)
        except BaseException as err:
            self._broken = True
            if isinstance(err, (EOFError, OSError, ValueError, pickle.UnpicklingError)):
                raise RuntimeError(self._ended()) from err
            raise
        self._waiting -= 1
        if status == "error":
            raise value
        return value

    def call(self, method: str, *args: Any) -> Any:
        """Run ``Store.<method>(*args)`` in the store's process; its answer, or its exception raised here."""
        if self._broken:  # the connection may hold half an answer: never wait on it
            raise RuntimeError("the connection to the tracking process was cut off midway by an interrupt")
        while self._waiting:  # answers of earlier submits come first
            self.result()
        self.submit(method, *args)
        return self.result()

    def close(self) -> None:
        """Close the connection (a child exits when its input closes, and is reaped). A stage's process that
        ends with ``os._exit`` closes it by ending."""
        for stream in (self._writer, self._reader, self._sock):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._process is not None:
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()

    def _ended(self) -> str:
        if self._process is None:
            return "the tracking daemon closed the connection"
        code = self._process.poll()
        return f"the tracking process ended{'' if code is None else f' with status {code}'}"


def _store_env() -> dict[str, str]:
    """The environment of a store process: this synthgap first on the path, whatever is installed."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


DAEMON_IDLE_S = 30.0  # the daemon exits when no stage has been connected for this long
_DAEMON_MODULES = ("tracking.py", "servers.py", "staging.py", "paths.py", "errors.py")  # what the daemon runs of synthgap
_DAEMON_ENV = ("MLFLOW_", "DATABRICKS_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
               "no_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "AWS_", "GOOGLE_", "AZURE_")  # how MLflow reaches a store


def daemon_address() -> Path:
    """The daemon's socket (:func:`synthgap.servers.server_address`). The key covers the Python, the code the
    daemon runs and the environment MLflow reads (``MLFLOW_*``, proxies, certificates, cloud credentials), so a
    stage never talks to a daemon started from other code or with other credentials. Raises OSError where the
    socket folder is not private."""
    key = hashlib.sha256(f"{sys.executable}\0{sys.prefix}".encode())
    here = Path(__file__).resolve().parent
    for name in _DAEMON_MODULES:
        key.update((here / name).read_bytes())
    for name in sorted(k for k in os.environ if k.startswith(_DAEMON_ENV)):
        key.update(f"\0{name}={os.environ[name]}".encode())
    return servers.server_address("tracking", key)


def connect_daemon(address: Path, timeout: float = 60.0) -> StoreProcess:
    """A connection to the daemon at ``address``, started first if none answers there. Raises OSError if it
    cannot be reached or started."""
    sock = servers.connect_or_start(address, [sys.executable, "-m", "synthgap.tracking", "--daemon"], _store_env(),
                                    "the tracking daemon", timeout)
    return StoreProcess(sock.makefile("rb"), sock.makefile("wb"), sock=sock)


_shared: StoreProcess | None = None


def store_process() -> StoreProcess:
    """This process's connection to a store, made on first use (again if it ended or broke): the daemon's,
    or a child of its own where the daemon cannot be used."""
    global _shared
    if _shared is None or not _shared.alive():
        if _shared is not None:
            _shared.close()
        else:
            atexit.register(lambda: _shared is not None and _shared.close())
        try:
            _shared = connect_daemon(daemon_address())
        except OSError:
            _shared = StoreProcess.child()
    return _shared


def _answer(store: Store, requests, answers) -> None:
    """Answer ``(method, args)`` requests with ``store`` until the requests end or the asker is gone."""
    while True:
        try:
            method, args = pickle.load(requests)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        try:
            answer = ("ok", getattr(store, method)(*args))
        except Exception as err:  # noqa: BLE001 - every error goes back to the stage, which reports it
            answer = ("error", err)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its type and text
            data = pickle.dumps(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
        try:
            answers.write(data)
            answers.flush()
        except OSError:  # the stage is gone
            return


def serve() -> None:
    """The child of :meth:`StoreProcess.child`: answer requests on stdin. Anything printed goes to stderr
    (stdout carries the answers). MLflow is imported before the first request arrives."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _quiet_mlflow_logs()
    import mlflow.entities  # noqa: F401
    import mlflow.tracking  # noqa: F401

    _answer(Store(), sys.stdin.buffer, answers)
    os._exit(0)  # no teardown of MLflow and SQLAlchemy: nothing is left to write


def serve_daemon(address: Path, ready_fd: int, idle_s: float = DAEMON_IDLE_S) -> None:
    """The tracking daemon: listen at ``address``, tell the starter on ``ready_fd``, answer each connection
    in a thread with a :class:`Store` of its own, and exit once no stage has been connected for ``idle_s``
    (connections already queued are still answered)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _quiet_mlflow_logs()
    listener = servers.Listener(address)
    listener.ready(ready_fd)

    import threading

    lock, threads = threading.Lock(), []
    state = {"active": 0, "idle_since": time.monotonic()}

    def handle(conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as requests, conn.makefile("wb") as answers:
                _answer(Store(), requests, answers)
        finally:
            with lock:
                state["active"] -= 1
                state["idle_since"] = time.monotonic()

    def start(conn: socket.socket) -> None:
        with lock:
            state["active"] += 1
        thread = threading.Thread(target=handle, args=(conn,), daemon=True)
        thread.start()
        threads[:] = [t for t in threads if t.is_alive()] + [thread]

    import mlflow.entities  # noqa: F401 - while the first stage loads its data
    import mlflow.tracking  # noqa: F401

    while True:
        conn = listener.accept(timeout=1.0)
        if conn is not None:
            start(conn)
            continue
        with lock:
            if state["active"] == 0 and time.monotonic() - state["idle_since"] > idle_s:
                break
    listener.close(start)
    for thread in threads:
        thread.join()
    os._exit(0)


class _Run:
    """Logging calls bound to one MLflow run (``store=None``: a non-main process of a distributed job,
    where every call does nothing). A failure of the tracking store ends the stage with one line."""

    def __init__(self, store: StoreProcess | None, run_id: str, uri: str = ""):
        self._store = store
        self._run_id = run_id
        self.uri = uri
        self.metrics: dict[str, Any] = {}

    def _ready(self) -> None:
        """Wait until the run exists (a StageRun opens its run while the stage computes)."""

    @property
    def store(self) -> StoreProcess | None:
        self._ready()
        return self._store

    @property
    def run_id(self) -> str:
        self._ready()
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.store is None:
            return
        with tracking_fault(self.uri):
            self.store.call("log_params", self.run_id, dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, timing: bool = False) -> None:
        """Log numeric metrics (non-numeric values are skipped). Values logged without a ``step`` also go
        to the stage's DVC metrics file, except ``timing`` ones (wall-clock times would make the metrics
        files of two identical runs differ)."""
        if self.store is None:
            return
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        with tracking_fault(self.uri):
            self.store.call("log_metrics", self.run_id, numeric, int(time.time() * 1000), step or 0)
        if step is None and not timing:
            self.metrics.update(numeric)

    def record_cells(self, cells: list[dict], metrics: tuple[str, ...]) -> None:
        """Each cell's mean over trials of ``metrics`` (``cells``: rows of ``synthgap.grid.summarise``) in the
        stage's DVC metrics file under ``per_cell``, so ``dvc metrics diff --targets reports/metrics -R``
        compares every table cell (Table 1's thresholds, each grid point); MLflow has them on the cells'
        child runs."""
        per_cell = self.metrics.setdefault("per_cell", {})
        for row in cells:
            per_cell[row["cell"]] = {k: float(row[k]) for k in metrics if k in row}

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file (the copy this stage staged, if it wrote one: see ``synthgap.staging``)."""
        if self.store is None:
            return
        with tracking_fault(self.uri):
            self.store.call("log_artifact", self.run_id, str(staging.current(Path(path)).resolve()), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.store is None:
            return
        with tracking_fault(self.uri):
            self.store.call("set_tags", self.run_id, {key: _as_param(value) for key, value in tags.items()})

    def finished_children(self, experiment: str, parent_run_id: str) -> list[dict[str, dict]]:
        """Params and metrics of the FINISHED child runs of another stage's run (its grid points)."""
        if self.store is None:
            return []
        with tracking_fault(self.uri):
            return self.store.call("finished_children", self.uri, experiment, parent_run_id)


class StageRun(_Run):
    """The MLflow run of one stage, plus its DVC metrics file (see the module docstring)."""

    def __init__(self, params, experiment: str, *, root: Path | None = None, metrics_dir: Path | None = None):
        if experiment not in EXPERIMENTS:
            raise ValueError(f"experiment must be one of {EXPERIMENTS}")
        self.params = params
        self.stage = params.stage
        self.experiment = experiment
        self.root = (root or repo_root()).resolve()
        self.metrics_path = (metrics_dir or workspace_root() / "reports" / "metrics") / f"{self.stage}.json"
        self.uri = resolve_tracking_uri(params.tracking.uri, self.root)

    def __enter__(self) -> StageRun:
        from synthgap.distributed import is_main

        super().__init__(None, "", self.uri)
        self._opening, self._experiment_id = None, None
        if not is_main():  # rank 0 alone logs (torchrun / accelerate launch)
            return self
        staging.preflight(workspace_root(), self.stage)
        check_reachable(self.uri)
        self._opening = store_process()
        self._opening.submit("open", self.uri, self.experiment, self.root, self.stage, self._tags(),
                             self.logged_params(), workspace_root() / "data" / "processed")
        if not self.uri.startswith("sqlite:///"):  # a server: every check (is it MLflow? may we write?) before compute
            self._ready()
        # a local database cannot be unreachable once its folder exists: the run opens while the stage computes
        return self

    def logged_params(self) -> dict[str, Any]:
        """The params this run logs: those ``dvc.yaml`` declares for the stage (the ones that rerun it when
        they change), or all it loaded where there is no ``dvc.yaml`` entry."""
        flat = self.params.flat()
        declared = staging.declared_params(workspace_root(), self.stage)
        return flat if declared is None else {k: v for k, v in flat.items() if staging.is_declared(k, declared)}

    def _tags(self) -> dict[str, str]:
        """Tags of the stage's run and of each child: stage, dataset, the process that owns it (for
        :func:`close_orphans`) and the DVC experiment (``DVC_EXP_NAME``) when run by ``dvc exp run``."""
        tags = {"synthgap.stage": self.stage, "synthgap.dataset": self.params.data.name,
                "synthgap.host": socket.gethostname(), "synthgap.pid": str(os.getpid()),
                "mlflow.source.name": f"stages/{self.stage.split('@')[0]}.py", "mlflow.source.type": "LOCAL"}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
        return tags

    def _ready(self) -> None:
        """Wait for the run to open; an error there ends the stage with one line ("at the start")."""
        opening = getattr(self, "_opening", None)
        if opening is None:
            return
        self._opening = None
        with tracking_fault(self.uri, "at the start"):
            self._experiment_id, self._run_id = opening.result()
        self._store = opening

    @contextmanager
    def child(self, name: str, params: Mapping[str, Any]) -> Iterator[_Run]:
        """A nested run (one grid point): params logged up front, FINISHED or FAILED at the end."""
        if self.store is None:
            yield _Run(None, "")
            return
        with tracking_fault(self.uri):
            run_id = self.store.call("create_run", self._experiment_id, name,
                                     {"mlflow.parentRunId": self.run_id, **self._tags()})
        child = _Run(self.store, run_id, self.uri)
        child.log_params(params)
        try:
            yield child
        except BaseException as err:
            _terminate_quietly(self.store, child.run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        with tracking_fault(self.uri):
            self.store.call("set_terminated", child.run_id, "FINISHED")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            try:
                self._ready()
            except BaseException:  # noqa: BLE001 - the stage's own error is the one to report
                return
            if self._store is not None:
                _terminate_quietly(self._store, self._run_id, "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
            return
        if self.store is None:
            return
        atomic_write_json(self.metrics_path, {**self.metrics, "mlflow_run_id": self.run_id})
        staging.commit()  # the stage's outputs land together, then the run is FINISHED
        with tracking_fault(self.uri, "after the outputs were written"):
            self.store.call("set_terminated", self.run_id, "FINISHED")


def _terminate_quietly(store: StoreProcess, run_id: str, status: str) -> None:
    """Mark a run FAILED or KILLED if the store still answers (else the next start closes it)."""
    try:
        store.call("set_terminated", run_id, status)
    except BaseException:  # noqa: BLE001, S110 - the stage's own error is the one to report
        pass


def close_orphans(client, experiment_id: str, stage: str) -> None:
    """Mark KILLED the runs of ``stage`` (and their child runs) left RUNNING by a process of this host that no
    longer exists (killed, or ended while the tracking server was down)."""
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`synthgap.stage` = '{stage}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    for run in runs:
        pid = run.data.tags.get("synthgap.pid", "")
        if run.data.tags.get("synthgap.host") == host and pid.isdigit() and not staging.process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--daemon"]:
        serve_daemon(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        serve()
