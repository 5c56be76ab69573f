import itertools

import numpy as np
import pytest
import torch

from synthgap.equivalence.quality import (
    INCEPTION_FILE,
    check_inception_weights,
    diversity,
    domain_accuracy,
    extract_features,
    frechet_distance,
    generator_quality,
    inception_score_of,
    inception_scores,
    kernel_distance,
    mmd2_unbiased,
)
from synthgap.errors import UserError
from synthgap.models import ClassifierSpec, build_classifier


def with_exact_statistics(z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``z`` shifted and linearly mapped so that its sample mean and covariance (np.cov) are exactly these."""
    centred = z - z.mean(0)
    white = centred @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(centred, rowvar=False)))).T
    return white @ np.linalg.cholesky(cov).T + mean


@pytest.mark.parametrize("d", [1, 3, 8])
def test_frechet_distance_of_n0_i_and_n0_4i_is_d(d):
    """||0||^2 + tr(I) + tr(4I) - 2 tr(sqrt(I 4I)) = d + 4d - 4d = d."""
    rng = np.random.default_rng(d)
    a = with_exact_statistics(rng.normal(size=(50, d)), np.zeros(d), np.eye(d))
    b = with_exact_statistics(rng.normal(size=(70, d)), np.zeros(d), 4 * np.eye(d))
    assert frechet_distance(a, b) == pytest.approx(d, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_with_different_means_and_covariances():
    """Means (0, 0), (1, 2); covariances diag(1, 9), diag(4, 1): 1 + 4 + 10 + 5 - 2 (sqrt 4 + sqrt 9) = 10.
    Covariances that do not commute, A = [[2, 1], [1, 2]] and B = diag(1, 4): for a 2 x 2 matrix with positive
    eigenvalues (sqrt l1 + sqrt l2)^2 = tr + 2 sqrt(det), so tr sqrt(AB) = sqrt(tr AB + 2 sqrt(det A det B))
    = sqrt(10 + 4 sqrt 3) and the distance is 4 + 5 - 2 sqrt(10 + 4 sqrt 3) (tr(sqrt A sqrt B) would differ)."""
    rng = np.random.default_rng(0)
    a = with_exact_statistics(rng.normal(size=(40, 2)), np.zeros(2), np.diag([1.0, 9.0]))
    b = with_exact_statistics(rng.normal(size=(60, 2)), np.array([1.0, 2.0]), np.diag([4.0, 1.0]))
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=1e-9)
    c = with_exact_statistics(rng.normal(size=(40, 2)), np.zeros(2), np.array([[2.0, 1.0], [1.0, 2.0]]))
    d = with_exact_statistics(rng.normal(size=(30, 2)), np.zeros(2), np.diag([1.0, 4.0]))
    assert frechet_distance(c, d) == pytest.approx(9 - 2 * np.sqrt(10 + 4 * np.sqrt(3)), rel=1e-9)


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


@pytest.mark.slow  # the real Inception-v3 at 299 px on a CPU; the arithmetic is covered by the known-answer test below
def test_fid_and_inception_score_from_a_local_weights_file(inception_file):
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (24, 1, 8, 8), generator=gen, dtype=torch.uint8)
    dark = (real // 8).to(torch.uint8)
    same = inception_scores(real, real.clone(), inception_file, "cpu", batch_size=16, splits=2)
    apart = inception_scores(real, dark, inception_file, "cpu", batch_size=16, splits=2)
    assert abs(same["fid"]) < 1e-2 < apart["fid"]
    assert same["inception_score_real"] == pytest.approx(same["inception_score_synthetic"], rel=1e-4)
    assert all(np.isfinite(v) for v in apart.values())  # known values: test_inception_score_and_fid_known_answers
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


K = 4  # classes of the stand-in network


class StandInInception(torch.nn.Module):
    """Replaces torch-fidelity's network inside torchmetrics. ``logits_unbiased``: 50 x one-hot of class
    (first pixel) for images whose first pixel is < K, all-zero logits (uniform predictions) otherwise.
    ``2048``: the image's mean pixel value in the first feature, zeros elsewhere."""

    created = []

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__()
        self.kind, self.weights = features_list[0], feature_extractor_weights_path
        StandInInception.created.append(self)

    def forward(self, imgs):
        assert imgs.dtype == torch.uint8 and imgs.shape[1:] == (3, 8, 8)  # grey images repeated to RGB
        if self.kind == "logits_unbiased":
            first = imgs[:, 0, 0, 0].long()
            onehot = torch.nn.functional.one_hot(first.clamp(max=K - 1), K).float()
            return 50.0 * onehot * (first < K).float()[:, None]
        features = torch.zeros(len(imgs), 2048)
        features[:, 0] = imgs.float().mean((1, 2, 3))
        return features


@pytest.mark.filterwarnings(r"ignore:std\(\). degrees of freedom:UserWarning")  # one split: its std is undefined
def test_inception_score_and_fid_known_answers(tmp_path, monkeypatch):
    """IS = exp(E_x KL(p(y|x) || p(y))): confident predictions spread evenly over K classes give K, uniform
    predictions give 1. FID of one-dimensional features: (m_r - m_s)^2 + (sd_r - sd_s)^2 (np.cov's n - 1)."""
    import torchmetrics.image.fid

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", StandInInception)
    StandInInception.created.clear()
    weights = tmp_path / INCEPTION_FILE
    torch.save({"Mixed_7c.branch_pool.conv.weight": torch.zeros(1)}, weights)
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (24, 1, 8, 8), generator=gen, dtype=torch.uint8)
    real[:, 0, 0, 0] = torch.arange(24) % K  # 6 images per class
    synthetic = (real // 2).to(torch.uint8)
    synthetic[:, 0, 0, 0] = 255
    out = inception_scores(real, synthetic, weights, "cpu", batch_size=10, splits=1)
    assert out["inception_score_real"] == pytest.approx(K, rel=1e-6)
    assert out["inception_score_synthetic"] == pytest.approx(1.0, abs=1e-6)
    mean_r, mean_s = real.double().mean((1, 2, 3)).numpy(), synthetic.double().mean((1, 2, 3)).numpy()
    expected = (mean_r.mean() - mean_s.mean()) ** 2 + (mean_r.std(ddof=1) - mean_s.std(ddof=1)) ** 2
    assert out["fid"] == pytest.approx(expected, rel=1e-4)
    one_d = lambda x: np.pad(x.double().mean((1, 2, 3)).numpy()[:, None], ((0, 0), (0, 2047)))  # noqa: E731
    assert out["kid"] == pytest.approx(direct_mmd2(one_d(real), one_d(synthetic)), rel=1e-6)
    assert out["kid_std"] == pytest.approx(0.0, abs=1e-9)  # 24 of 24 in every subset
    assert {m.weights for m in StandInInception.created} == {str(weights)}  # every network from the local file


def direct_mmd2(a, b):
    """Unbiased MMD^2 term by term (Binkowski et al. 2018, eq. 4) with k(x, y) = (x.y / d + 1)^3."""
    k = lambda x, y: (float(np.dot(x, y)) / len(x) + 1) ** 3  # noqa: E731
    m, n = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    bb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return aa + bb - 2 * sum(k(x, y) for x in a for y in b) / (m * n)


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(loc=0.5, size=(4, 3))
    assert mmd2_unbiased(a, b) == pytest.approx(direct_mmd2(a, b), rel=1e-12)
    # by hand: k(0, 3) = 1, k(1, 1) = 8, k(0, 1) = 1, k(3, 1) = 64: 1 + 8 - 2 (1 + 1 + 64 + 64) / 4 = -56
    assert mmd2_unbiased(np.array([[0.0], [3.0]]), np.array([[1.0], [1.0]])) == pytest.approx(-56.0)
    kid, std = kernel_distance(a, b, subset_size=100)  # subsets of min(100, 5, 4) = 4: 4 of a's 5 rows, all of b
    each = [direct_mmd2(a[list(rows)], b) for rows in itertools.combinations(range(5), 4)]
    assert std > 0 and min(each) <= kid <= max(each)
    assert kernel_distance(a[:4], b) == pytest.approx((direct_mmd2(a[:4], b), 0.0), abs=1e-9)  # every subset is all
    from torchmetrics.image.kid import poly_mmd

    torchmetrics_kid = float(poly_mmd(torch.from_numpy(a[:4]), torch.from_numpy(b)))  # it needs equal sizes
    assert mmd2_unbiased(a[:4], b) == pytest.approx(torchmetrics_kid, rel=1e-9)


def test_inception_score_of_confident_even_and_uniform_predictions():
    confident = np.eye(4)[np.repeat(np.arange(4), 10)]  # class blocks
    assert inception_score_of(confident, splits=1) == pytest.approx((4.0, 0.0))
    assert 3.0 < inception_score_of(confident, splits=2)[0] <= 4.0  # shuffled splits (class blocks would give 2)
    assert inception_score_of(np.full((10, 4), 0.25), splits=2) == pytest.approx((1.0, 0.0))


def test_generator_quality_without_inception_uses_the_classifier_space():
    model = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=4, mean=(0.5,), std=(0.2,))).eval()
    gen = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 1, 8, 8), generator=gen, dtype=torch.uint8)
    same = generator_quality(real, real.clone(), model)
    dark = generator_quality(real, (real // 4).to(torch.uint8), model)
    assert same["features"] == "classifier" and abs(same["fid"]) < 1e-6 < dark["fid"]
    assert same["kid"] < dark["kid"] and 1.0 <= dark["is"] <= 4.0
    features = extract_features(model, real)
    assert same["kid"] == pytest.approx(kernel_distance(features, features)[0])


def test_image_domain_classifier_tells_apart_what_differs_and_not_what_does_not(fast_train):
    """Appendix F's domain classifier on images: bright vs dark noise is told apart on the held-out halves;
    two draws from one distribution stay near chance (50 % on 64 + 64 test images)."""
    from synthgap.config import ModelConfig
    from synthgap.equivalence.quality import image_domain_accuracy

    rng = np.random.default_rng(0)
    dark = torch.from_numpy(rng.integers(0, 100, (128, 1, 8, 8), dtype=np.uint8))
    bright = torch.from_numpy(rng.integers(120, 256, (160, 1, 8, 8), dtype=np.uint8))
    same = torch.from_numpy(rng.integers(0, 100, (128, 1, 8, 8), dtype=np.uint8))
    model = ModelConfig(arch="resnet20", width=8)
    apart = image_domain_accuracy(dark, bright, model, fast_train, seed=0, device="cpu")
    alike = image_domain_accuracy(dark, same, model, fast_train, seed=0, device="cpu")
    assert apart > 95 and 30 < alike < 70
    with pytest.raises(ValueError, match="at least 4 images"):
        image_domain_accuracy(dark[:3], bright, model, fast_train, seed=0, device="cpu")


def test_a_pool_is_measured_whole_or_on_a_seeded_subset_of_the_requested_size():
    from synthgap.equivalence.quality import pool_sample

    x, y = np.arange(100).reshape(100, 1, 1, 1), np.arange(100) % 4
    assert pool_sample(x, y, None, 0)[1] is y and pool_sample(x, y, 100, 0)[1] is y and pool_sample(x, y, 500, 0)[1] is y
    xs, ys = pool_sample(x, y, 30, seed=5)
    picked = xs.reshape(-1)
    assert len(picked) == 30 == len(set(picked.tolist())) and np.all(np.diff(picked) > 0)  # distinct, pool order
    assert np.array_equal(ys, y[picked])  # labels travel with their images
    assert np.array_equal(pool_sample(x, y, 30, seed=5)[0], xs) and not np.array_equal(pool_sample(x, y, 30, seed=6)[0], xs)


def test_diversity_in_inception_features_is_that_of_the_pool_features(tmp_path, monkeypatch):
    """With the stand-in network the 2048-d features are (mean pixel, 0, ..., 0), so diversity (the mean over
    classes of the features' mean per-dimension std) is the per-class std of the mean pixel / 2048."""
    import torchmetrics.image.fid

    from synthgap.config import QualityConfig

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", StandInInception)
    weights = tmp_path / INCEPTION_FILE
    torch.save({"Mixed_7c.branch_pool.conv.weight": torch.zeros(1)}, weights)
    gen = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (24, 1, 8, 8), generator=gen, dtype=torch.uint8)
    synthetic = torch.randint(0, 128, (20, 1, 8, 8), generator=gen, dtype=torch.uint8)
    y_real, y_syn = np.arange(24) % 3, np.arange(20) % 2
    out = inception_scores(real, synthetic, weights, "cpu", batch_size=10, splits=1, labels=(y_real, y_syn))

    def expected(images, labels):
        means = images.double().mean((1, 2, 3)).numpy()
        return np.mean([means[labels == c].std() for c in np.unique(labels)]) / 2048

    assert out["diversity_real"] == pytest.approx(expected(real, y_real), rel=1e-5)
    assert out["diversity_synthetic"] == pytest.approx(expected(synthetic, y_syn), rel=1e-5)
    assert "diversity_real" not in inception_scores(real, synthetic, weights, "cpu", batch_size=10, splits=1)
    with pytest.raises(ValueError, match="diversity_features: inception needs inception_weights"):
        QualityConfig(diversity_features="inception")
