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


def channels_last_for(device: torch.device, precision: str, stacked: bool = False) -> bool:
    """NHWC convolutions pay on CUDA, with bf16 on CPU (oneDNN), and for the grouped convolutions of
    :class:`~synthgap.models.stacked.StackedClassifier` on CPU in fp32 (a ResNet-20 w8 training step at 8x8 is
    18 % faster at k = 9 and 25 % at k = 16, but 9 % slower for one model alone); a single fp32 CPU model
    keeps NCHW."""
    return device.type == "cuda" or uses_bf16(device, precision) or stacked
