"""What a stage pays before it computes: ``python -m stages <name>`` forked from the launch server against a
process of its own (``SYNTHGAP_LAUNCH=inline``, the same as ``python -m stages.<name>``).

    python -m benchmarks.launch [--repeats 5]

Each run is a stage of the embedded pipeline with its arguments from ``dvc.yaml`` and one option it does not have, so it imports everything it
needs at the top of its script, and ends with one error line before any data is loaded: the fixed cost of a
stage, without its work (what a stage imports inside its functions, diffusers in the Real-Fake stages, is not in
it). Each mode's time per stage is the median over ``--repeats`` runs. The runs have an environment variable
of their own, so the first forked run starts a launch server of its own: that cold start is timed too. Writes
``benchmarks/results/launch-cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.common import report
from benchmarks.repro import ROOT
from synthgap.staging import declared_command

STAGES = ("train_reference", "train_generator@0", "cas_final", "augment@100", "synthesize_realfake", "compare_generators")


def start_up(stage: str, mode: str, nonce: str) -> float:
    """Wall seconds of ``python -m stages <stage> <dvc.yaml's arguments> --no-such-option x`` in ``mode`` (fork
    or inline)."""
    env = {**os.environ, "SYNTHGAP_LAUNCH": mode, "SYNTHGAP_BENCHMARK_RUN": nonce}
    args = [stage.split("@")[0], *declared_command(ROOT, stage), "--no-such-option", "x"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "stages", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if "--no-such-option" not in proc.stderr:
        sys.exit(f"benchmark: error: {stage} did not stop at its options:\n{proc.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    nonce = str(time.time_ns())  # a launch server of this run's own
    cold = start_up("train_reference", "fork", nonce)
    stages = {}
    for stage in STAGES:
        inline = statistics.median(start_up(stage, "inline", nonce) for _ in range(args.repeats))
        forked = statistics.median(start_up(stage, "fork", nonce) for _ in range(args.repeats))
        stages[stage] = {"inline_s": round(inline, 3), "fork_s": round(forked, 3), "saved_s": round(inline - forked, 3)}
    inline_mean = statistics.mean(s["inline_s"] for s in stages.values())
    fork_mean = statistics.mean(s["fork_s"] for s in stages.values())
    report("launch", torch.device("cpu"), {
        "benchmark": "launch", "repeats": args.repeats, "cold_server_first_stage_s": round(cold, 3),
        "inline_mean_s": round(inline_mean, 3), "fork_mean_s": round(fork_mean, 3),
        "ratio": round(inline_mean / fork_mean, 2), "stages": stages,
    })


if __name__ == "__main__":
    main()
