"""Device selection and CPU threads."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from synthgap.errors import UserError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit device that is absent is a user error. Under
    ``torchrun`` (``WORLD_SIZE`` > 1) this also joins the process group, and on CUDA returns this process's GPU."""
    from synthgap.distributed import local_device, setup

    device = _resolve(name)
    device = local_device(device)
    setup(device)
    return device


def _resolve(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but CUDA is not available", "set device: auto or device: cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device '{name}' does not exist ({torch.cuda.device_count()} GPUs)", "pick an existing GPU index")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' requested but it is not available", "set device: auto or device: cpu")
    return device


def share_cores(workspace: Path, root: Path) -> int:
    """Set torch's CPU threads and return them: ``SYNTHGAP_THREADS`` if set, else the cores divided among the
    experiments a DVC queue runs now. ``dvc queue start -j N`` runs each experiment in its own temporary copy
    ``<root>/.dvc/tmp/exps/tmp*``; N stages with all cores each oversubscribe the CPU many times over."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    value = os.environ.get("SYNTHGAP_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"SYNTHGAP_THREADS={value!r} is not a positive integer", "unset it or set a number of threads")
        threads = int(value)
    elif workspace.resolve() != root.resolve():  # a queued experiment in a temporary copy
        running = [p for p in (root / ".dvc" / "tmp" / "exps").glob("tmp*") if p.is_dir()]
        threads = max(1, cores // max(1, len(running)))
    else:
        threads = cores
    if "torch" in sys.modules:
        import torch

        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    else:  # torch reads it when it loads; a stage that never needs torch (a report) does not pay 1.5 s for it
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
