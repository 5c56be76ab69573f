"""Device selection."""

from __future__ import annotations

import torch

from synthgap.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an explicit device that is absent is a user error. Under
    ``torchrun`` (``WORLD_SIZE`` > 1) this also joins the process group, and on CUDA returns this process's GPU."""
    from synthgap.distributed import local_device, setup

    device = _resolve(name)
    device = local_device(device)
    setup(device)
    return device


def _resolve(name: str) -> torch.device:
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
