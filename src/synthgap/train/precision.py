"""Mixed-precision policy shared by training and evaluation."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on CUDA for ``auto`` (or anywhere for ``bf16``); full fp32 otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()
