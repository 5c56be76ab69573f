"""Mixed-precision and memory-layout policy shared by training and evaluation."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def uses_bf16(device: torch.device, precision: str) -> bool:
    """``auto``: bf16 autocast on CUDA, fp32 elsewhere (CPU runs stay bit-identical across CPUs);
    ``bf16`` anywhere (on CPUs with AMX it is ~3x faster for ResNet-20 w64, see benchmarks/); ``fp32`` never."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_for(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(device, precision) else nullcontext()


def channels_last_for(device: torch.device, precision: str) -> bool:
    """NHWC convolutions pay on CUDA and with bf16 on CPU (oneDNN); fp32 CPU runs keep NCHW, so their
    numbers do not change with the layout."""
    return device.type == "cuda" or uses_bf16(device, precision)
