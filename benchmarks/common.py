"""What every benchmark shares: the device, the environment record, timing, FLOP counts, the device's
practical peak, a profile summary and the results file.

Each benchmark prints one JSON object and writes it to ``benchmarks/results/<name>-<device type>.json``
with the device, torch / CUDA versions, the date and the exact command, so a number in the README can be
traced to the run that made it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from synthgap.paths import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the classifiers' normalisation


def pick_device(name: str | None) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmark: error: --device cuda but no CUDA device is visible; use --device cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``, with the device drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
        name = f"{name} ({torch.get_num_threads()} threads)"
    return {
        "device": name,
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m " + " ".join([f"benchmarks.{Path(sys.argv[0]).stem}", *map(shlex.quote, sys.argv[1:])]),
        "host_cpus": os.cpu_count(),
    }


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of one call, counted by torch's FlopCounterMode (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def measured_peak_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """The practical peak: FLOP/s of a large square matmul in ``dtype`` (what dense kernels can reach here;
    a vendor's datasheet figure is higher and not reachable by real code)."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    seconds = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size**3 / seconds


def profile_summary(fn: Callable[[], object], device: torch.device, top: int = 8) -> list[dict]:
    """Where the time goes: the ``top`` operators by self time over one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    return [{"op": e.key, "share": round(getattr(e, key) / total, 3), "calls": e.count} for e in events[:top]]


def report(name: str, device: torch.device, result: dict, save: bool = True) -> dict:
    out = environment(device) | result
    print(json.dumps(out, indent=1))
    if save:
        atomic_write_json(RESULTS / f"{name}-{device.type}.json", out)
    return out
