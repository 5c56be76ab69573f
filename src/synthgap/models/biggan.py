"""A class-conditional BigGAN-deep (Brock et al. 2019) for small images.

Generator: the latent z is concatenated with a shared class embedding (the hierarchical latent of
BigGAN-deep feeds the whole ``[z, e(y)]`` to every block); a linear layer maps it to a 4x4 feature map;
each resolution has ``depth`` bottleneck residual blocks with conditional batch norm (gains and biases are
linear functions of ``[z, e(y)]``), the last of which upsamples x2; optional self-attention at one
resolution; BN, ReLU, 3x3 conv and tanh. Discriminator: bottleneck residual blocks that downsample
until 8x8 (or 4x4 for images of at most 8 pixels), optional self-attention, ReLU, sum pooling, a linear
output plus the projection term <e_D(y), h>. All convolutions and linear layers are spectrally normalised and
orthogonally initialised. Any image size 4 * 2^k and any channel count works.

Two block layouts (``GanSpec.blocks``):

- ``"studiogan"``: the layout of the official GaFi code (``models/big_gan.py``, ``studiogan: True``, the
  blocks of PyTorch-StudioGAN's ``big_resnet_deep_studiogan``). Every generator block has a learned 1x1
  conv on its skip path (after the upsampling), and BN epsilon is 1e-5. The discriminator's stem maps to
  ``d_width`` channels; the first block (``d_width -> 4 * d_width``) average-pools its skip and then applies a
  learned 1x1 conv; every other downsampling block applies a learned 1x1 conv to its skip and then pools; its
  residual path pools after the 3x3 convs, before the last ReLU and 1x1 conv.
- ``"compact"``: the lighter variant kept for the embedded digits and for older checkpoints: the generator's
  skip is the identity (channels dropped if they shrink), BN epsilon 1e-4; the discriminator's stem maps to
  ``4 * d_width`` channels, its skips are identities (plus concatenated 1x1 channels if they grow) and its
  residual path applies the last ReLU before the pooling (original BigGAN-deep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from synthgap.errors import UserError


@dataclass(frozen=True)
class GanSpec:
    """Everything needed to rebuild the networks (saved with every checkpoint)."""

    num_classes: int
    image_size: int
    channels: int
    z_dim: int = 128
    shared_dim: int = 128
    g_width: int = 128  # base width; every generator stage has 4 * g_width channels (BigGAN CIFAR layout)
    d_width: int = 128
    depth: int = 2  # blocks per resolution
    attention_resolution: int = 16  # 0 disables self-attention
    dataset: str = ""
    # "compact" here (not the config default) so checkpoints saved before this key existed rebuild as before
    blocks: Literal["studiogan", "compact"] = "compact"

    def __post_init__(self) -> None:
        if self.blocks not in ("studiogan", "compact"):
            raise ValueError(f"GAN blocks must be 'studiogan' or 'compact', got {self.blocks!r}")
        stages = math.log2(self.image_size / 4)
        if self.image_size < 8 or stages != int(stages):
            raise UserError(f"the GAN needs images of size 4 * 2^k (8, 16, 32, 64, ...), these are {self.image_size} px",
                            "set data.image_size (npz, imagefolder) to the next such size, e.g. 32 for 28 px images")


def sn(module: nn.Module) -> nn.Module:
    nn.init.orthogonal_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return spectral_norm(module, eps=1e-6)


class ConditionalBatchNorm(nn.Module):
    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-4):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False, eps=eps, momentum=0.1)
        self.gain = sn(nn.Linear(cond_dim, channels, bias=False))
        self.bias = sn(nn.Linear(cond_dim, channels, bias=False))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = 1.0 + self.gain(cond)[:, :, None, None]
        return self.bn(x) * gain + self.bias(cond)[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN attention with a learned residual scale that starts at 0."""

    def __init__(self, ch: int):
        super().__init__()
        self.theta = sn(nn.Conv2d(ch, ch // 8, 1, bias=False))
        self.phi = sn(nn.Conv2d(ch, ch // 8, 1, bias=False))
        self.g = sn(nn.Conv2d(ch, ch // 2, 1, bias=False))
        self.o = sn(nn.Conv2d(ch // 2, ch, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).flatten(2)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)
        g = F.max_pool2d(self.g(x), 2).flatten(2)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (N, HW, HW/4)
        out = (g @ attn.transpose(1, 2)).view(n, c // 2, h, w)
        return x + self.gamma * self.o(out)


class GBlock(nn.Module):
    """BigGAN-deep generator block: 1x1 down-projection, two 3x3 convs, 1x1 up-projection, CBN before each.

    The skip path drops channels (compact) or, with ``learned_skip`` (StudioGAN), is a 1x1 conv after the upsampling.
    """

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, upsample: bool,
                 learned_skip: bool = False, eps: float = 1e-4):
        super().__init__()
        hidden = max(in_ch // 4, 1)
        self.upsample = upsample
        self.out_ch = out_ch
        self.bn = nn.ModuleList([ConditionalBatchNorm(c, cond_dim, eps) for c in (in_ch, hidden, hidden, hidden)])
        self.conv1 = sn(nn.Conv2d(in_ch, hidden, 1))
        self.conv2 = sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv3 = sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv4 = sn(nn.Conv2d(hidden, out_ch, 1))
        self.conv_skip = sn(nn.Conv2d(in_ch, out_ch, 1)) if learned_skip else None

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn[0](x, cond)))
        h = F.relu(self.bn[1](h, cond))
        skip = x if self.conv_skip is not None else x[:, : self.out_ch]  # BigGAN-deep drops channels
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        h = self.conv2(h)
        h = self.conv3(F.relu(self.bn[2](h, cond)))
        h = self.conv4(F.relu(self.bn[3](h, cond)))
        if self.conv_skip is not None:
            skip = self.conv_skip(skip)
        return h + skip


class DBlock(nn.Module):
    """BigGAN-deep discriminator block; the skip path concatenates a learned 1x1 projection to grow channels."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, preactivation: bool = True):
        super().__init__()
        hidden = max(out_ch // 4, 1)
        self.downsample = downsample
        self.preactivation = preactivation
        self.conv1 = sn(nn.Conv2d(in_ch, hidden, 1))
        self.conv2 = sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv3 = sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv4 = sn(nn.Conv2d(hidden, out_ch, 1))
        self.extra = sn(nn.Conv2d(in_ch, out_ch - in_ch, 1)) if out_ch > in_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(x) if self.preactivation else x)
        h = self.conv2(F.relu(h))
        h = self.conv3(F.relu(h))
        h = F.relu(h)
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        h = self.conv4(h)
        skip = F.avg_pool2d(x, 2) if self.downsample else x
        if self.extra is not None:
            skip = torch.cat([skip, self.extra(skip)], dim=1)
        return h + skip


class StudioDBlock(nn.Module):
    """StudioGAN's BigGAN-deep discriminator block: ReLU-1x1, ReLU-3x3, ReLU-3x3, [pool], ReLU-1x1.

    Skip: the first block pools then applies a 1x1 conv; others apply a 1x1 conv (when downsampling or when
    the channels change) then pool; otherwise the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, first: bool = False):
        super().__init__()
        hidden = max(out_ch // 4, 1)
        self.downsample, self.first = downsample, first
        self.conv1 = sn(nn.Conv2d(in_ch, hidden, 1))
        self.conv2 = sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv3 = sn(nn.Conv2d(hidden, hidden, 3, padding=1))
        self.conv4 = sn(nn.Conv2d(hidden, out_ch, 1))
        learned = first or downsample or in_ch != out_ch
        self.conv_skip = sn(nn.Conv2d(in_ch, out_ch, 1)) if learned else None

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(x))
        h = self.conv3(F.relu(self.conv2(F.relu(h))))
        h = self.conv4(F.relu(self.pool(h)))  # pool before the last ReLU
        if self.first:
            skip = self.conv_skip(self.pool(x))
        else:
            skip = self.pool(x if self.conv_skip is None else self.conv_skip(x))
        return h + skip


class Generator(nn.Module):
    def __init__(self, spec: GanSpec):
        super().__init__()
        self.spec = spec
        ch = 4 * spec.g_width
        cond_dim = spec.z_dim + spec.shared_dim
        studio = spec.blocks == "studiogan"
        eps = 1e-5 if studio else 1e-4  # GaFi code: bn_epsilon 1e-5
        self.shared = nn.Embedding(spec.num_classes, spec.shared_dim)
        nn.init.orthogonal_(self.shared.weight)
        self.linear = sn(nn.Linear(cond_dim, ch * 4 * 4))
        blocks, resolution = [], 4
        for _ in range(int(math.log2(spec.image_size // 4))):
            for i in range(spec.depth):
                upsample = i == spec.depth - 1
                blocks.append(GBlock(ch, ch, cond_dim, upsample, learned_skip=studio, eps=eps))
            resolution *= 2
            if resolution == spec.attention_resolution:
                blocks.append(SelfAttention(ch))
        self.blocks = nn.ModuleList(blocks)
        self.out_bn = nn.BatchNorm2d(ch, eps=eps)
        self.out_conv = sn(nn.Conv2d(ch, spec.channels, 3, padding=1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of shape (N, C, H, W) for latents z (N, z_dim) and labels y (N,)."""
        cond = torch.cat([z, self.shared(y)], dim=1)
        h = self.linear(cond).view(len(z), -1, 4, 4)
        for block in self.blocks:
            h = block(h) if isinstance(block, SelfAttention) else block(h, cond)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class Discriminator(nn.Module):
    def __init__(self, spec: GanSpec):
        super().__init__()
        ch = 4 * spec.d_width
        studio = spec.blocks == "studiogan"
        floor = 4 if spec.image_size <= 8 else 8
        in_ch = spec.d_width if studio else ch  # StudioGAN: the stem maps to the base width
        self.stem = sn(nn.Conv2d(spec.channels, in_ch, 3, padding=1))
        blocks, resolution = [], spec.image_size
        while True:
            down = resolution > floor
            for i in range(spec.depth):
                if studio:
                    blocks.append(StudioDBlock(in_ch, ch, downsample=down and i == 0, first=not blocks))
                    in_ch = ch
                else:
                    blocks.append(DBlock(ch, ch, downsample=down and i == 0))
            resolution = resolution // 2 if down else resolution
            if resolution == spec.attention_resolution and down:
                blocks.append(SelfAttention(ch))
            if not down:
                break
        self.blocks = nn.Sequential(*blocks)
        self.linear = sn(nn.Linear(ch, 1))
        self.embed = sn(nn.Embedding(spec.num_classes, ch))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(self.stem(x))).sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)
