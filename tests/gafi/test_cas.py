from types import SimpleNamespace

import torch

from synthgap.config import ClassifierConfig, ModelConfig, TrainConfig
from synthgap.gafi.cas import GeneratorChoice, cas_model, cas_scores, cas_source
from synthgap.train.classifier import to_device_tensors, train_classifier
from tests.conftest import separable_images


class BandGenerator(torch.nn.Module):
    """A perfect 'generator' of the separable toy classes: class c lights band c; noise elsewhere."""

    def __init__(self, num_classes=4, scramble=False):
        super().__init__()
        self.spec = SimpleNamespace(z_dim=64, channels=1, image_size=8, num_classes=num_classes)
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.scramble = scramble

    def forward(self, z, y):
        if self.scramble:
            y = (y * 7 + z[:, 0].gt(0).long()) % self.spec.num_classes  # labels no longer match the content
        img = z[:, :64].view(-1, 1, 8, 8).clamp(-1, 1) * 0.3 - 0.6
        band = torch.arange(8)[None, :] // 2 == y[:, None]
        return torch.where(band[:, None, :, None], torch.ones_like(img), img) + 0 * self.anchor


def cas_of(generator):
    cfg = ClassifierConfig(model=ModelConfig(width=4), train=TrainConfig(
        epochs=4, batch_size=32, lr=0.05, schedule="constant", milestones=(), crop_padding=0, flip=False, precision="fp32"))
    evals = {"val": to_device_tensors(*separable_images(20, seed=1), "cpu"),
             "test": to_device_tensors(*separable_images(30, seed=2), "cpu")}
    source = cas_source([GeneratorChoice(generator, 1.0, None)], None, num_classes=4, synthetic_size=200, recycle=2, seed=0)
    result = train_classifier(cas_model(cfg, source, 4, seed=0), source, cfg.train, seed=0, device="cpu", evals=evals,
                              eval_every_epoch=False)
    _, cas = cas_scores(result, "val")
    return cas, source.stats()


def test_cas_is_near_perfect_for_a_perfect_generator_and_near_chance_for_a_mislabelling_one():
    good, stats = cas_of(BandGenerator())
    assert good >= 97.0 and stats["sets_generated"] == 2
    bad, _ = cas_of(BandGenerator(scramble=True))
    assert bad <= 50.0  # chance is 25 %; the scrambled generator's labels carry half a bit at most
