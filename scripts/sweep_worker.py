"""One machine's share of a sweep: pull, queue its grid points, run them on its GPUs, push the experiments.

    python scripts/sweep_worker.py --worker 0 --workers 3 --tracking-uri http://mlflow.lab:5000 \\
        --gpus 0,1 -S 'gafi.threshold=0.0,0.3,0.6' -S 'gafi.stddev=1.0,1.5'

Every machine runs the same command with its own ``--worker``; the grid (the cartesian product of the ``-S``
lists, in DVC's ``key=v1,v2`` syntax) is split round-robin, so the machines together run each point once.
Steps: ``dvc pull`` (inputs from the DVC remote), ``dvc exp run --queue`` per point (with
``tracking.uri`` set to the shared MLflow server), one ``dvc queue start`` worker per GPU pinned with
``CUDA_VISIBLE_DEVICES``, wait, then ``dvc exp push <git remote>`` (experiments to Git, outputs to the DVC
remote). ``--dry-run`` prints the commands without running them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import subprocess
import sys
import time


def grid(specs: list[str]) -> list[list[str]]:
    """``['a=1,2', 'b=x']`` -> ``[['a=1', 'b=x'], ['a=2', 'b=x']]`` (lists in brackets stay whole)."""
    axes = []
    for spec in specs:
        key, _, values = spec.partition("=")
        if not key or not values:
            sys.exit(f"sweep_worker: error: bad -S {spec!r}; write key=v1,v2,...")
        items = [values] if values.startswith("[") else values.split(",")
        axes.append([f"{key}={v}" for v in items])
    return [list(point) for point in itertools.product(*axes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", type=int, required=True, help="this machine's index, 0-based")
    ap.add_argument("--workers", type=int, required=True, help="number of machines")
    ap.add_argument("-S", dest="specs", action="append", required=True, help="key=v1,v2,... (repeatable)")
    ap.add_argument("--tracking-uri", required=True, help="the shared MLflow server, e.g. http://mlflow.lab:5000")
    ap.add_argument("--gpus", default="", help="comma-separated GPU indices, one queue worker each (default: one worker)")
    ap.add_argument("--git-remote", default="origin")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if not 0 <= args.worker < args.workers:
        sys.exit(f"sweep_worker: error: --worker {args.worker} must be in 0..{args.workers - 1}")
    points = grid(args.specs)[args.worker :: args.workers]

    def run(cmd: list[str], env: dict | None = None, check: bool = True) -> str:
        print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
        if args.dry_run:
            return ""
        return subprocess.run(cmd, check=check, env=env, capture_output=True, text=True).stdout

    run(["dvc", "pull", "--allow-missing"], check=False)
    for point in points:
        run(["dvc", "exp", "run", "--queue", "-S", f"tracking.uri={args.tracking_uri}",
             *itertools.chain.from_iterable(("-S", p) for p in point)])
    for gpu in [g for g in args.gpus.split(",") if g] or [None]:
        env = os.environ | ({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {})
        run(["dvc", "queue", "start", "-j", "1"], env=env)
    while not args.dry_run:
        status = run(["dvc", "queue", "status"])
        if not any(word in status for word in ("Queued", "Running")):
            break
        time.sleep(30)
    failed = run(["dvc", "queue", "status"]).count("Failed")
    run(["dvc", "exp", "push", args.git_remote])
    print(f"sweep_worker: {len(points)} points queued, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
