"""Networks: classifiers (CIFAR ResNets, torchvision ResNet-50 and ViT-B/32)."""

from synthgap.models.classifier import (
    Classifier,
    ClassifierSpec,
    build_classifier,
    check_compatible,
    load_classifier,
    save_classifier,
    spec_for_data,
)

__all__ = ["Classifier", "ClassifierSpec", "build_classifier", "check_compatible", "load_classifier", "save_classifier", "spec_for_data"]
