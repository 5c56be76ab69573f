import numpy as np
import pytest
import torch

from synthgap.config import ModelConfig
from synthgap.errors import UserError
from synthgap.models import (
    ClassifierSpec,
    build_classifier,
    check_compatible,
    load_classifier,
    save_classifier,
    spec_for_data,
)


@pytest.mark.parametrize("arch", ["resnet20", "resnet110", "resnet50", "vit_b_32"])
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_every_arch_takes_every_input_geometry(arch, channels, size):
    spec = ClassifierSpec(arch, 7, channels, size, width=4, vit_image_size=32, mean=(0.5,) * channels, std=(0.2,) * channels)
    model = build_classifier(spec).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, size, size)).shape == (2, 7)


def test_resnet20_width64_is_the_gafi_size():
    spec = ClassifierSpec("resnet20", 10, 3, 32, width=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    params = sum(p.numel() for p in build_classifier(spec).parameters())
    assert 4.2e6 < params < 4.4e6


def test_spec_for_data_reads_geometry_and_normalisation():
    x = np.zeros((10, 8, 8, 3), np.uint8)
    x[..., 0] = 255
    spec = spec_for_data(ModelConfig(width=8), x, 5, "toy")
    assert (spec.in_channels, spec.image_size, spec.num_classes) == (3, 8, 5)
    assert spec.mean == (1.0, 0.0, 0.0) and min(spec.std) > 0


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    spec = ClassifierSpec("resnet20", 3, 1, 8, width=4, mean=(0.4,), std=(0.3,), dataset="toy")
    model = build_classifier(spec)
    save_classifier(model, tmp_path / "c.pt")
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(payload) == {"spec", "state_dict"}
    back = load_classifier(tmp_path / "c.pt").eval()
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(back(x), model.eval()(x))
    assert back.spec == spec


def test_broken_and_foreign_checkpoints_are_user_errors(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable synthgap checkpoint"):
        load_classifier(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="run `dvc repro train_reference`"):
        load_classifier(tmp_path / "missing.pt")
    spec = ClassifierSpec("resnet20", 3, 1, 8, width=4, mean=(0.4,), std=(0.3,), dataset="toy")
    model = build_classifier(spec)
    check_compatible(model, 3, (8, 8, 1), "toy", tmp_path / "c.pt")
    with pytest.raises(UserError, match="not on cifar10"):
        check_compatible(model, 10, (32, 32, 3), "cifar10", tmp_path / "c.pt")
