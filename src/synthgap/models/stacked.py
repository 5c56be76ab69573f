"""k classifiers of one architecture trained as one network (the trials of a cell, the cells of a grid).

Small classifiers leave a CPU or GPU mostly idle: a ResNet-20 of width 8 on 8x8 images spends its time in
per-layer overhead, not arithmetic. :func:`stack` packs k :class:`~synthgap.models.Classifier` s with CIFAR
ResNet backbones into one module whose every convolution is grouped k ways (model j owns channel block j),
whose BatchNorm layers normalise the k*C channels (statistics per model, as before), whose option-A
shortcuts zero-pad each model's channel block, and whose head is a batched matmul. Each model keeps its own
weights, normalisation constants, data and random streams; the arithmetic per model is the same as alone,
so a stacked model equals the same model trained alone up to float rounding (``tests/models/test_stacked.py``).
:func:`unstack` writes the trained weights back.

Input of the stacked network: (B, k*C, H, W), model j's images in channels ``j*C .. (j+1)*C - 1``;
output: logits (B, k, classes).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from synthgap.models.classifier import Classifier
from synthgap.models.resnet import PadShortcut

STACKABLE = ("resnet20", "resnet110")


class StackedLinear(nn.Module):
    """k linear layers applied to k feature blocks: (B, k*F) -> (B, k, out)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.k = len(layers)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # (k, out, F)
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # (k, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.k, -1)
        return torch.einsum("bkf,kof->bko", x, self.weight) + self.bias


class StackedClassifier(nn.Module):
    """k classifiers as one module (see the module docstring)."""

    def __init__(self, models: list[Classifier]):
        super().__init__()
        specs = {_shape_of(m.spec) for m in models}
        if len(specs) != 1 or models[0].spec.arch not in STACKABLE:
            raise ValueError("only CIFAR ResNets of one shape can be stacked")
        self.k = len(models)
        self.register_buffer("mean", torch.cat([m.mean for m in models], dim=1))
        self.register_buffer("std", torch.cat([m.std for m in models], dim=1))
        self.backbone = copy.deepcopy(models[0].backbone)
        backbones = [m.backbone for m in models]
        for name, module in list(self.backbone.named_modules()):
            parts = [b.get_submodule(name) for b in backbones]
            packed = _pack(module, parts)
            if packed is not None:
                _replace(self.backbone, name, packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def _shape_of(spec) -> tuple:
    return spec.arch, spec.num_classes, spec.in_channels, spec.image_size, spec.width, spec.shortcut


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _pack(module: nn.Module, parts: list[nn.Module]) -> nn.Module | None:
    k = len(parts)
    if isinstance(module, nn.Conv2d):
        packed = nn.Conv2d(
            k * module.in_channels, k * module.out_channels, module.kernel_size, module.stride, module.padding,
            module.dilation, k * module.groups, module.bias is not None, module.padding_mode,
        )
        with torch.no_grad():
            packed.weight.copy_(torch.cat([p.weight for p in parts]))
            if module.bias is not None:
                packed.bias.copy_(torch.cat([p.bias for p in parts]))
        return packed.to(module.weight.device)
    if isinstance(module, nn.BatchNorm2d):
        packed = nn.BatchNorm2d(k * module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        with torch.no_grad():
            for key, value in packed.state_dict().items():
                if key == "num_batches_tracked":
                    value.copy_(parts[0].num_batches_tracked)
                else:
                    value.copy_(torch.cat([p.state_dict()[key] for p in parts]))
        return packed.to(module.weight.device)
    if isinstance(module, nn.Linear):
        return StackedLinear(parts)
    if isinstance(module, PadShortcut):  # option A: pad each model's channel block on its own
        return PadShortcut(module.in_ch, module.out_ch, module.stride, groups=k)
    if isinstance(module, (nn.Sequential, nn.ReLU, nn.Identity)) or type(module).__name__ in ("CifarResNet", "BasicBlock"):
        return None  # containers and parameter-free layers work on grouped channels as they are
    raise ValueError(f"cannot stack a {type(module).__name__}")


@torch.no_grad()
def unstack(stacked: StackedClassifier, models: list[Classifier]) -> None:
    """Copy the trained weights and statistics of ``stacked`` back into its k ``models``."""
    k = stacked.k
    for name, module in stacked.backbone.named_modules():
        targets = [m.backbone.get_submodule(name) for m in models]
        if isinstance(module, StackedLinear):
            for j, t in enumerate(targets):
                t.weight.copy_(module.weight[j])
                t.bias.copy_(module.bias[j])
        elif isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            for key, value in module.state_dict().items():
                for j, t in enumerate(targets):
                    t.state_dict()[key].copy_(value if key == "num_batches_tracked" else value.chunk(k)[j])


def can_stack(models: list[Classifier]) -> bool:
    return len(models) > 1 and len({_shape_of(m.spec) for m in models}) == 1 and models[0].spec.arch in STACKABLE
