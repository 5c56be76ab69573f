"""A small class-conditional UNet in the DDPM++ style for EDM's raw network ``F(x, c_noise, y)``.

Positional embedding of ``c_noise`` plus a learned class embedding condition every residual block (GroupNorm,
SiLU, 3x3 convs, the embedding added between the convs); the encoder halves the resolution between levels,
the decoder concatenates the encoder's activations; optional self-attention at one resolution; the output
convolution starts at zero. Sizes are parameters (:class:`UNetSpec`), so one class serves a CPU preset for
8x8 digits and a paper-like preset for 32x32 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetSpec:
    num_classes: int
    image_size: int
    channels: int
    width: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    blocks: int = 2
    attention_resolution: int = 16  # 0 disables
    dropout: float = 0.1
    augment_dim: int = 0  # EDM's augment labels (synthgap.diffusion.augment), 0: trained without augmentation
    # "compact": average-pool / nearest-upsample between levels, attention after every block at its resolution,
    # the class embedding added after the mapping layers. "ddpm++": EDM's DDPM++ (SongUNet) layout: residual
    # down- and up-sampling blocks, attention in every encoder block and the last decoder block at its
    # resolution, the class embedding added before the mapping layers (CIFAR-10: width 128, mult (2, 2, 2),
    # 4 blocks, attention at 16: ~56 M parameters).
    layout: str = "compact"
    dataset: str = ""


def groups(ch: int) -> int:
    """GroupNorm groups as in DDPM++: at most 32, at least 4 channels per group."""
    return max(1, min(32, ch // 4))


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, + embedding, GroupNorm, SiLU, dropout, 3x3 conv (from zero), + skip, / sqrt 2.
    ``resample`` "down" / "up" halves / doubles the resolution before the first conv and on the skip path
    (2x2 average / nearest, EDM's [1, 1] filter), whose 1x1 projection is then always learned (DDPM++)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, resample: str | None = None):
        super().__init__()
        self.resample = resample
        self.norm1 = nn.GroupNorm(groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch or resample else nn.Identity()

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.resample == "up" else x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.scale(F.silu(self.norm1(x))))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (h + self.skip(self.scale(x))) / math.sqrt(2)


class Attention(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, 1, c, h * w).unbind(1)
        attn = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return (x + self.out(attn.transpose(-1, -2).reshape(n, c, h, w))) / math.sqrt(2)


class UNet(nn.Module):
    def __init__(self, spec: UNetSpec):
        super().__init__()
        self.spec = spec
        width, emb_dim = spec.width, 4 * spec.width
        self.map_noise = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # as EDM: the augment labels join the noise embedding before the mapping layers (no bias: zeros add nothing)
        self.map_augment = nn.Linear(spec.augment_dim, width, bias=False) if spec.augment_dim else None
        if self.map_augment is not None:
            nn.init.xavier_uniform_(self.map_augment.weight)  # EDM's init of this layer
        if spec.layout not in ("compact", "ddpm++"):
            raise ValueError(f"UNet layout {spec.layout!r}: compact or ddpm++")
        ddpmpp = spec.layout == "ddpm++"
        self.map_label = nn.Embedding(spec.num_classes, width if ddpmpp else emb_dim)
        self.stem = nn.Conv2d(spec.channels, width, 3, padding=1)
        self.down, skips, ch, res = nn.ModuleList(), [width], width, spec.image_size
        for level, mult in enumerate(spec.channel_mult):
            for _ in range(spec.blocks):
                self.down.append(ResBlock(ch, width * mult, emb_dim, spec.dropout))
                ch = width * mult
                if res == spec.attention_resolution:
                    self.down.append(Attention(ch))
                skips.append(ch)
            if level < len(spec.channel_mult) - 1:
                self.down.append(ResBlock(ch, ch, emb_dim, spec.dropout, "down") if ddpmpp else nn.AvgPool2d(2))
                res //= 2
                skips.append(ch)
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, spec.dropout), Attention(ch), ResBlock(ch, ch, emb_dim, spec.dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(spec.channel_mult))):
            for block in range(spec.blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), width * mult, emb_dim, spec.dropout))
                ch = width * mult
                if res == spec.attention_resolution and (not ddpmpp or block == spec.blocks):
                    self.up.append(Attention(ch))
            if level > 0:
                self.up.append(ResBlock(ch, ch, emb_dim, spec.dropout, "up") if ddpmpp
                               else nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.out_norm = nn.GroupNorm(groups(ch), ch)
        self.out_conv = nn.Conv2d(ch, spec.channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embed(self, c_noise: torch.Tensor, labels: torch.Tensor, augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        half = self.spec.width // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=c_noise.device) / half)
        angles = c_noise.float()[:, None] * freqs[None]  # EDM feeds c_noise = ln(sigma) / 4 directly
        positional = torch.cat([angles.cos(), angles.sin()], dim=1)
        if self.map_augment is not None and augment_labels is not None:
            positional = positional + self.map_augment(augment_labels.to(positional.dtype))
        if self.spec.layout == "ddpm++":  # the class joins before the mapping layers
            return F.silu(self.map_noise(positional + self.map_label(labels)))
        return F.silu(self.map_noise(positional) + self.map_label(labels))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``F(x, c_noise, y)``; ``augment_labels`` (N, augment_dim) in training with augmentation, None (the
        clean mode, all zero) when sampling."""
        emb = self.embed(c_noise, labels, augment_labels)
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, (ResBlock, Attention)) else layer(h)
            if not isinstance(layer, Attention):
                skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock) and layer.resample is None:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            elif isinstance(layer, ResBlock):  # a residual up-sampling block
                h = layer(h, emb)
            else:
                h = layer(h, emb) if isinstance(layer, Attention) else layer(h)
        return self.out_conv(F.silu(self.out_norm(h)))
