"""Generator quality of chosen checkpoints (cas_final): raw and as GaFi samples, against the real test split."""

from types import SimpleNamespace

import numpy as np
import torch

from synthgap.config import GafiConfig, GeneratorQualityConfig
from synthgap.gafi.pipeline import Member
from synthgap.gafi.quality import measure_generators
from synthgap.models import ClassifierSpec, build_classifier
from tests.conftest import separable_images
from tests.gafi.test_cas import BandGenerator


class BlankGenerator(BandGenerator):
    """Noise only, no class band: far from the real images."""

    def forward(self, z, y):
        return z[:, :64].view(-1, 1, 8, 8).clamp(-1, 1) * 0.3 - 0.6 + 0 * self.anchor


def context(images):
    x_test, y_test = separable_images(15, seed=2)  # 60 real test images
    torch.manual_seed(0)
    classifier = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=4, mean=(0.3,), std=(0.3,))).eval()
    generators = {0: BandGenerator(), 1: BlankGenerator()}
    return SimpleNamespace(cfg=GafiConfig(generator_seeds=(0, 1), num_generators=(1,), quality=GeneratorQualityConfig(images=images)),
                           data=SimpleNamespace(x_test=x_test, y_test=y_test, num_classes=4), seed=0, filter=classifier,
                           device="cpu", generator=lambda seed, epoch: generators[seed])


def test_each_checkpoint_is_measured_raw_and_as_gafi_samples_it():
    ctx = context(images=40)
    rows = measure_generators(ctx, [Member(0, 10, 1.0, None), Member(1, 20, 2.0, 0.0)])
    assert [(r["generator_seed"], r["checkpoint"], r["variant"], r["stddev"], r["threshold"]) for r in rows] == [
        (0, 10, "raw", 1.0, "none"), (1, 20, "raw", 1.0, "none"), (1, 20, "gafi", 2.0, 0.0)]  # raw = GaFi's: once
    assert all(r["n_real"] == 40 and r["n_synthetic"] == 40 and r["features"] == "classifier" for r in rows)
    assert rows[0]["fid"] < rows[1]["fid"] and rows[0]["kid"] < rows[1]["kid"]  # band images are the real ones' kind
    assert all(np.isfinite([r["fid"], r["is"], r["kid"]]).all() for r in rows)
    assert measure_generators(ctx, [Member(0, 10, 1.0, None)]) == rows[:1]  # seeded: the same numbers again
    assert measure_generators(context(images=100), [Member(0, 10)])[0]["n_real"] == 60  # at most the test split
