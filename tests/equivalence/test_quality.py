import numpy as np
import pytest
import torch

from synthgap.equivalence.quality import diversity, domain_accuracy, frechet_distance
from synthgap.models import ClassifierSpec, build_classifier


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a + np.array([2.0, 0.0, 0.0])  # same covariance, mean shifted by 2
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=1e-6)


def test_diversity_and_domain_accuracy():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 500)
    assert diversity(rng.normal(scale=2.0, size=(1000, 4)), labels) == pytest.approx(2.0, rel=0.05)
    same = domain_accuracy(rng.normal(size=(600, 4)), rng.normal(size=(600, 4)))
    apart = domain_accuracy(rng.normal(size=(600, 4)), rng.normal(loc=3.0, size=(600, 4)))
    assert 40 <= same <= 60 and apart >= 98


@pytest.mark.parametrize("arch", ["resnet20", "resnet50"])
def test_classifier_features_are_the_heads_input(arch):
    model = build_classifier(ClassifierSpec(arch, 5, 1, 8, width=4, mean=(0.5,), std=(0.2,))).eval()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        features = model.features(x)
        head = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.testing.assert_close(head(features), model(x))
