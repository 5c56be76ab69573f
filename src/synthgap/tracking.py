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
2. creates the database and the experiment under a file lock (for a local SQLite database in a background
   thread while the stage computes: importing MLflow takes seconds; the first logging call waits for it and
   re-raises any error there), so parallel runs (``dvc queue start -j N``)
   never race on the first migration or on experiment creation;
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

import fcntl
import logging
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from synthgap import staging
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
    lock_path = Path(uri[len("sqlite:///") :]).with_suffix(".db.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def _log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, _as_param(v)) for k, v in params.items()]
    for start in range(0, len(items), _MAX_BATCH):
        client.log_batch(run_id, params=items[start : start + _MAX_BATCH])


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


class _Run:
    """Logging calls bound to one MLflow run (``client=None``: a non-main process of a distributed job,
    where every call does nothing). A failure of the tracking store ends the stage with one line."""

    def __init__(self, client, run_id: str, uri: str = ""):
        self._client = client
        self._run_id = run_id
        self.uri = uri
        self.metrics: dict[str, Any] = {}

    def _ready(self) -> None:
        """Wait until the run exists (a StageRun opens its run in the background)."""

    @property
    def client(self):
        self._ready()
        return self._client

    @property
    def run_id(self) -> str:
        self._ready()
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.client is None:
            return
        with tracking_fault(self.uri):
            _log_params(self.client, self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, timing: bool = False) -> None:
        """Log numeric metrics (non-numeric values are skipped). Values logged without a ``step`` also go
        to the stage's DVC metrics file, except ``timing`` ones (wall-clock times would make the metrics
        files of two identical runs differ)."""
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        items = [Metric(k, v, now, step or 0) for k, v in numeric.items()]
        with tracking_fault(self.uri):
            for start in range(0, len(items), _MAX_BATCH):
                self.client.log_batch(self.run_id, metrics=items[start : start + _MAX_BATCH])
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
        if self.client is None:
            return
        with tracking_fault(self.uri):
            self.client.log_artifact(self.run_id, str(staging.current(Path(path))), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.client is None:
            return
        with tracking_fault(self.uri):
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, _as_param(value))


class StageRun(_Run):
    """The MLflow run of one stage, plus its DVC metrics file (see the module docstring)."""

    def __init__(self, params, experiment: str, *, root: Path | None = None, metrics_dir: Path | None = None):
        if experiment not in EXPERIMENTS:
            raise ValueError(f"experiment must be one of {EXPERIMENTS}")
        self.params = params
        self.stage = params.stage
        self.experiment = experiment
        self.root = root or repo_root()
        self.metrics_path = (metrics_dir or workspace_root() / "reports" / "metrics") / f"{self.stage}.json"
        self.uri = resolve_tracking_uri(params.tracking.uri, self.root)

    def __enter__(self) -> StageRun:
        from synthgap.distributed import is_main

        super().__init__(None, "", self.uri)
        self._opening, self._error, self._experiment_id = None, None, None
        if not is_main():  # rank 0 alone logs (torchrun / accelerate launch)
            return self
        staging.preflight(workspace_root(), self.stage)
        check_reachable(self.uri)
        if self.uri.startswith("sqlite:///"):
            # Importing MLflow and opening the database takes seconds; a local database cannot be unreachable
            # once its folder exists, so that happens while the stage computes. The first logging call waits.
            self._opening = threading.Thread(target=self._open_in_background, name="mlflow-open", daemon=True)
            self._opening.start()
        else:  # a server: every check (is it MLflow? may we write?) before any compute
            with tracking_fault(self.uri, "at the start"):
                self._open()
        return self

    def _open(self) -> None:
        client = get_client(self.uri)
        self._experiment_id = ensure_experiment(client, self.uri, self.experiment, self.root)
        close_orphans(client, self._experiment_id, self.stage)
        tags = self._tags()
        commit = git_commit(self.root)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = client.create_run(self._experiment_id, run_name=self.stage, tags=tags)
        _log_params(client, run.info.run_id, self.logged_params())
        inputs = dataset_inputs(workspace_root() / "data" / "processed")
        if inputs:
            client.log_inputs(run.info.run_id, datasets=inputs)
        self._client, self._run_id = client, run.info.run_id

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

    def _open_in_background(self) -> None:
        try:
            with tracking_fault(self.uri, "at the start"):
                self._open()
        except BaseException as err:  # re-raised in the stage's thread at its next logging call
            self._error = err

    def _ready(self) -> None:
        opening = getattr(self, "_opening", None)
        if opening is None or opening is threading.current_thread():
            return
        opening.join()
        self._opening = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    @contextmanager
    def child(self, name: str, params: Mapping[str, Any]) -> Iterator[_Run]:
        """A nested run (one grid point): params logged up front, FINISHED or FAILED at the end."""
        if self.client is None:
            yield _Run(None, "")
            return
        with tracking_fault(self.uri):
            run = self.client.create_run(
                self._experiment_id,
                run_name=name,
                tags={"mlflow.parentRunId": self.run_id, **self._tags()},
            )
        child = _Run(self.client, run.info.run_id, self.uri)
        child.log_params(params)
        try:
            yield child
        except BaseException as err:
            _terminate_quietly(self.client, child.run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        with tracking_fault(self.uri):
            self.client.set_terminated(child.run_id, status="FINISHED")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            try:
                self._ready()
            except BaseException:  # noqa: BLE001 - the stage's own error is the one to report
                return
            if self._client is not None:
                _terminate_quietly(self._client, self._run_id, "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
            return
        if self.client is None:
            return
        atomic_write_json(self.metrics_path, {**self.metrics, "mlflow_run_id": self.run_id})
        staging.commit()  # the stage's outputs land together, then the run is FINISHED
        with tracking_fault(self.uri, "after the outputs were written"):
            self.client.set_terminated(self.run_id, status="FINISHED")


def _terminate_quietly(client, run_id: str, status: str) -> None:
    """Mark a run FAILED or KILLED if the store still answers (else the next start closes it)."""
    try:
        client.set_terminated(run_id, status=status)
    except Exception:  # noqa: BLE001, S110 - the stage's own error is the one to report
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
