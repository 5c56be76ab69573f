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
