"""Image classifiers behind one interface, and their weights-only checkpoints.

A :class:`Classifier` takes float images in [0, 1] of shape (N, C, H, W), normalises them with the training
set's per-channel mean and std (stored as buffers, so a checkpoint carries them), adapts the channel count
and size the backbone expects, and returns logits. :class:`ClassifierSpec` is everything needed to rebuild
the network; a checkpoint is ``{"spec": spec-as-dict, "state_dict": weights}`` and is loaded with
``torch.load(..., weights_only=True)``: no pickled code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synthgap.errors import UserError
from synthgap.models.resnet import CifarResNet
from synthgap.checkpoint import load_torch, save_torch

ARCHS = ("resnet20", "resnet110", "resnet50", "vit_b_32")


@dataclass(frozen=True)
class ClassifierSpec:
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    width: int = 64
    vit_image_size: int = 224
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    dataset: str = ""
    shortcut: str = "B"  # CIFAR ResNets (ModelConfig.shortcut)
    init: str = "kaiming_fan_out"  # CIFAR ResNets (ModelConfig.init)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"unknown classifier arch '{self.arch}'", f"use one of {', '.join(ARCHS)}")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError("mean and std need one value per input channel")
        if self.shortcut not in ("A", "B"):
            raise UserError(f"unknown ResNet shortcut '{self.shortcut}'", "use A or B")


class Classifier(nn.Module):
    def __init__(self, spec: ClassifierSpec):
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))
        self.backbone = build_backbone(spec)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.spec.arch in ("resnet50", "vit_b_32") and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.spec.arch == "vit_b_32" and x.shape[-1] != self.spec.vit_image_size:
            size = self.spec.vit_image_size
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the input of the backbone's last linear layer (any architecture)."""
        head = [m for m in self.backbone.modules() if isinstance(m, nn.Linear)][-1]
        captured: list[torch.Tensor] = []
        handle = head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.forward(x)
        finally:
            handle.remove()
        return captured[0]


def build_backbone(spec: ClassifierSpec) -> nn.Module:
    if spec.arch in ("resnet20", "resnet110"):
        return CifarResNet(int(spec.arch[6:]), spec.num_classes, spec.in_channels, spec.width, spec.shortcut, spec.init)
    import torchvision

    if spec.arch == "resnet50":
        return torchvision.models.resnet50(weights=None, num_classes=spec.num_classes)
    return torchvision.models.vit_b_32(weights=None, image_size=spec.vit_image_size, num_classes=spec.num_classes)


def spec_for_data(model_cfg, x_train: np.ndarray, num_classes: int, dataset: str) -> ClassifierSpec:
    """A spec for uint8 NHWC training images: geometry from the array, normalisation from its pixels."""
    pixels = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64) / 255.0
    return ClassifierSpec(
        arch=model_cfg.arch,
        num_classes=num_classes,
        in_channels=int(x_train.shape[-1]),
        image_size=int(x_train.shape[1]),
        width=model_cfg.width,
        vit_image_size=model_cfg.vit_image_size,
        mean=tuple(float(v) for v in pixels.mean(0)),
        std=tuple(float(max(v, 1e-3)) for v in pixels.std(0)),
        dataset=dataset,
        shortcut=model_cfg.shortcut,
        init=model_cfg.init,
    )


def build_classifier(spec: ClassifierSpec) -> Classifier:
    return Classifier(spec)


def save_classifier(model: Classifier, path: Path) -> None:
    save_torch({"spec": asdict(model.spec), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


def load_classifier(path: Path, map_location: str | torch.device = "cpu") -> Classifier:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"classifier checkpoint {path} not found", "run `dvc repro train_reference` first")
    payload = load_torch(path, map_location, fix="retrain it with train_reference")
    try:
        spec = ClassifierSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["spec"].items()})
    except (RuntimeError, KeyError, TypeError, EOFError, ValueError) as err:
        raise UserError(f"{path} is not a synthgap classifier checkpoint ({err})", "retrain it with train_reference") from err
    model = Classifier(spec)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise UserError(
            f"{path} does not match its own settings ({str(err).splitlines()[0]})", "retrain it with train_reference"
        ) from err
    return model.to(map_location)


def check_compatible(model: Classifier, num_classes: int, image_shape: tuple[int, int, int], dataset: str, path: Path) -> None:
    """Refuse a checkpoint trained for another dataset or image geometry."""
    spec = model.spec
    h, w, c = image_shape
    if spec.num_classes != num_classes or spec.in_channels != c or spec.image_size != h or (spec.dataset and spec.dataset != dataset):
        raise UserError(
            f"{path} was trained on {spec.dataset or '?'} ({spec.num_classes} classes, {spec.in_channels}x{spec.image_size}px), "
            f"not on {dataset} ({num_classes} classes, {c}x{h}px)",
            "rerun train_reference for this dataset (`dvc repro train_reference`)",
        )
