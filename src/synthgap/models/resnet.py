"""CIFAR-style ResNets (He et al. 2016, section 4.2) with a width parameter.

Depth 6n+2: a 3x3 stem, three stages of n basic blocks with widths w, 2w, 4w (stride 2 at the start of the
second and third), global average pooling and a linear head. ``width=16`` is the classic ResNet-20/110;
GaFi's "ResNet-20 width 64" is ``width=64`` (about 4.3 M parameters). Where a block changes the shape its
shortcut is option B, a projection (1x1 conv + BN), or option A (He et al.'s CIFAR choice and the GaFi code):
parameter-free, stride-2 subsampling with the new channels zero-padded. Any input size and channel count works.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PadShortcut(nn.Module):
    """Option A shortcut: keep every ``stride``-th pixel and zero-pad the channels from ``in_ch`` to ``out_ch``,
    half the new channels before the old ones and half after (as the GaFi code). ``groups`` > 1: the input is
    ``groups`` channel blocks (stacked models) and each block is padded on its own."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int = 1):
        super().__init__()
        self.in_ch, self.out_ch, self.stride, self.groups = in_ch, out_ch, stride, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        n, _, h, w = x.shape
        front = (self.out_ch - self.in_ch) // 2
        x = x.reshape(n, self.groups, self.in_ch, h, w)
        x = F.pad(x, (0, 0, 0, 0, front, self.out_ch - self.in_ch - front))
        return x.reshape(n, self.groups * self.out_ch, h, w)


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = (PadShortcut(in_ch, out_ch, stride) if shortcut == "A" else
                             nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: int = 16, shortcut: str = "B",
                 init: str = "kaiming_fan_out"):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, in_ch = [], width
        for stage, out_ch in enumerate((width, 2 * width, 4 * width)):
            for block in range(n):
                layers.append(BasicBlock(in_ch, out_ch, 2 if stage > 0 and block == 0 else 1, shortcut))
                in_ch = out_ch
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and init == "kaiming_fan_out":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and init == "he_normal":
                he_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (after global average pooling)."""
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras' HeNormal: a normal truncated at 2 std, rescaled (/0.8796) to std sqrt(2 / fan_in)."""
    fan_in = weight[0].numel()
    std = math.sqrt(2.0 / fan_in) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
