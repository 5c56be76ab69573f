"""Open the README's MLflow UI link in headless Chromium and check what a new user lands on: the runs table of an
experiment, with the runs' datasets, not MLflow 3's GenAI overview.

    python scripts/ui_check.py [--chromium /usr/bin/chromium] [--experiment gafi] [--out docs/mlflow-ui.png]

Serves ``mlflow.db`` of this repository with ``mlflow ui`` (the README's command) on a free local port, opens
``/#/experiments?workflowType=machine_learning`` (the README's link) and the experiment's own page, writes a
screenshot of the latter and exits 1 unless the rendered page shows the runs table (a run named after a stage
and the Dataset column). Needs Debian's Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=20000", "--window-size=1600,1000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(binary: str, profile: Path, *args: str) -> str:
    proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=180)
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--experiment", default="gafi")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow-ui.png")
    args = ap.parse_args()
    if not Path(args.chromium).exists():
        sys.exit("ui_check: error: no Chromium; install it (apt-get install chromium) or pass --chromium PATH")
    if not (ROOT / "mlflow.db").is_file():
        sys.exit("ui_check: error: no mlflow.db in the repository; run `dvc repro` first")

    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(f"sqlite:///{ROOT / 'mlflow.db'}").get_experiment_by_name(args.experiment)
    if experiment is None:
        sys.exit(f"ui_check: error: no experiment {args.experiment} in mlflow.db")
    port = free_port()
    server = subprocess.Popen(["mlflow", "ui", "--backend-store-uri", f"sqlite:///{ROOT / 'mlflow.db'}",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("ui_check: error: mlflow ui did not start")
                time.sleep(1)
        with tempfile.TemporaryDirectory() as profile:
            listing = chromium(args.chromium, Path(profile), "--dump-dom",
                               f"{base}/#/experiments?workflowType=machine_learning")
            page = f"{base}/#/experiments/{experiment.experiment_id}/runs"
            runs = chromium(args.chromium, Path(profile), "--dump-dom", page)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            chromium(args.chromium, Path(profile), f"--screenshot={args.out}", page)
    finally:
        server.terminate()
        server.wait(timeout=30)
    checks = {
        "the README link lists the experiments": args.experiment in listing,
        "no GenAI overview (traces, token usage)": "Token usage" not in runs and "Traces" not in runs.split("Runs")[0],
        "the runs table holds a stage's run": "cas_final" in runs or "train_generator" in runs,
        "the Dataset column": "Dataset" in runs,
        "a screenshot": args.out.is_file() and args.out.stat().st_size > 10_000,
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(f"screenshot: {args.out}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
