from pathlib import Path

import pytest

from synthgap.config import SECTIONS, load_stage_params
from tests.conftest import REPO

PRESETS = sorted((REPO / "params").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_is_a_valid_params_file(preset: Path):
    for stage in SECTIONS:
        load_stage_params(stage, preset)


def test_cifar10_preset_is_the_gafi_recipe():
    cfg = load_stage_params("train_reference", REPO / "params" / "cifar10.yaml").section.classifier
    assert (cfg.model.arch, cfg.model.width) == ("resnet20", 64)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.milestones, cfg.train.crop_padding) == (100, 0.1, (60, 80), 4)


def test_cifar10_preset_has_the_gafi_paper_settings():
    gafi = load_stage_params("cas_final", REPO / "params" / "cifar10.yaml", section="gafi").section
    assert (gafi.gan.z_dim, gafi.gan.g_width, gafi.gan.depth, gafi.gan.d_steps, gafi.gan.ema_decay) == (128, 128, 2, 3, 0.9999)
    assert gafi.search.checkpoints[0] == 150 and gafi.search.checkpoints[-1] == 500 and len(gafi.search.checkpoints) == 36
    assert len(gafi.search.stddevs) == 21 and len(gafi.search.thresholds) == 10
    assert gafi.num_generators == (1, 2, 4, 6) and gafi.cas.model.width == 64


def test_imagenette_preset_has_the_real_fake_code_settings():
    rf = load_stage_params("finetune_lora", REPO / "params" / "imagenette.yaml", section="realfake").section
    assert (rf.finetune.rank, rf.finetune.lr, rf.finetune.batch_size, rf.finetune.snr_gamma) == (4, 1e-4, 8, 5.0)
    assert (rf.finetune.distribution, rf.finetune.weight, rf.finetune.guidance) == ("mean", 0.003, "image")
    s = rf.synthesis
    assert (s.strength, s.steps, s.guidance_scale, s.lora_scale, rf.resolution) == (0.75, 30, 2.0, 0.5, 512)
    assert rf.scales == (1, 2, 5, 10) and rf.privacy.shadows == 10 and len(rf.class_names) == 10
    assert (rf.classifier.model.arch, rf.classifier.train.epochs, rf.classifier.train.gamma) == ("resnet50", 200, 0.2)


def train_configs(obj, where: str = ""):
    """Every classifier training recipe (TrainConfig) inside a validated params section."""
    from pydantic import BaseModel

    from synthgap.config import TrainConfig

    if isinstance(obj, TrainConfig):
        yield where, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from train_configs(getattr(obj, name), f"{where}.{name}")


@pytest.mark.parametrize("path", [REPO / "params.yaml", *PRESETS], ids=["params.yaml", *(p.name for p in PRESETS)])
def test_every_shipped_classifier_recipe_writes_resumable_state(path: Path):
    found = {}
    for section in SECTIONS:
        body = load_stage_params(section, path, section=section).section
        found.update({f"{section}{where}": cfg.checkpoint_every for where, cfg in train_configs(body)})
    assert len(found) >= 4 and all(every > 0 for every in found.values()), found
