import numpy as np
import pytest
import torch

from synthgap.equivalence.quality import (
    INCEPTION_FILE,
    check_inception_weights,
    diversity,
    domain_accuracy,
    frechet_distance,
    inception_scores,
)
from synthgap.errors import UserError
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


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A randomly initialised Inception-v3 saved as torch-fidelity's weights file (the real one cannot be
    downloaded here): the same keys, shapes and file format, so the loading and metric code is exercised."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in model.modules():  # variance-preserving init, so features do not vanish through 48 layers
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    torch.save(model.state_dict(), path)
    return path


def test_fid_and_inception_score_from_a_local_weights_file(inception_file):
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (24, 1, 8, 8), generator=gen, dtype=torch.uint8)
    dark = (real // 8).to(torch.uint8)
    same = inception_scores(real, real.clone(), inception_file, "cpu", batch_size=16, splits=2)
    apart = inception_scores(real, dark, inception_file, "cpu", batch_size=16, splits=2)
    assert abs(same["fid"]) < 1e-2 < apart["fid"]
    assert same["inception_score_real"] == pytest.approx(same["inception_score_synthetic"], rel=1e-4)
    assert all(np.isfinite(v) and (k.endswith("_std") or k == "fid" or v >= 1.0) for k, v in apart.items())
    assert inception_scores(real, dark, inception_file, "cpu", batch_size=24, splits=2) == pytest.approx(apart, rel=1e-4, abs=1e-5)


def test_inception_weights_that_are_missing_or_not_inception_are_refused(tmp_path):
    with pytest.raises(UserError, match="not found"):
        check_inception_weights(tmp_path / INCEPTION_FILE)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not torch-fidelity's Inception-v3"):
        check_inception_weights(tmp_path / "other.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a loadable weights file"):
        check_inception_weights(tmp_path / "broken.pth")
