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


def resnet20_parameters_by_hand(width: int, classes: int, shortcut: str) -> int:
    """Stem conv + BN, 3 stages of 3 blocks (two 3x3 convs + two BNs each), the head; option B adds a
    1x1 conv + BN where the width doubles, option A nothing."""
    conv = lambda i, o, k=3: i * o * k * k  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, width) + bn(width)
    in_ch = width
    for out in (width, 2 * width, 4 * width):
        for block in range(3):
            total += conv(in_ch, out) + conv(out, out) + 2 * bn(out)
            if in_ch != out and shortcut == "B":
                total += conv(in_ch, out, 1) + bn(out)
            in_ch = out
    return total + 4 * width * classes + classes


@pytest.mark.parametrize("shortcut,expected", [("A", 269_722), ("B", 272_474)])
def test_resnet20_w16_parameter_count_per_shortcut(shortcut, expected):
    spec = ClassifierSpec("resnet20", 10, 3, 32, width=16, mean=(0.5,) * 3, std=(0.25,) * 3, shortcut=shortcut)
    model = build_classifier(spec)
    assert sum(p.numel() for p in model.parameters()) == expected == resnet20_parameters_by_hand(16, 10, shortcut)
    shortcuts = [b.shortcut for b in model.backbone.blocks]
    assert sum(p.numel() for s in shortcuts for p in s.parameters()) == (0 if shortcut == "A" else 2752)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    spec = ClassifierSpec("resnet20", 10, 1, 8, width=4, mean=(0.5,), std=(0.25,), shortcut="A")
    block = build_classifier(spec).backbone.blocks[3]  # first block of stage 2: 4 -> 8 channels, stride 2
    x = torch.arange(2 * 4 * 6 * 6, dtype=torch.float32).reshape(2, 4, 6, 6)
    out = block.shortcut(x)
    assert out.shape == (2, 8, 3, 3)
    for n in range(2):
        for c in range(8):
            for i in range(3):
                for j in range(3):
                    want = x[n, c - 2, 2 * i, 2 * j] if 2 <= c < 6 else 0.0  # 2 zero channels, the 4 old, 2 zero
                    assert out[n, c, i, j] == want


def test_he_normal_init_is_truncated_with_fan_in_std():
    spec = ClassifierSpec("resnet20", 10, 3, 32, width=16, mean=(0.5,) * 3, std=(0.25,) * 3, init="he_normal")
    torch.manual_seed(0)
    backbone = build_classifier(spec).backbone
    conv = backbone.blocks[8].conv2.weight  # 64 x 64 x 3 x 3, fan_in 576
    std = (2 / 576) ** 0.5
    assert conv.std().item() == pytest.approx(std, rel=0.03)
    assert conv.abs().max().item() <= 2 * std / 0.87962566103423978  # Keras: truncated at 2 std of the raw normal
    head = backbone.head  # 64 inputs: std sqrt(2/64), bias zero
    assert head.weight.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.15) and not head.bias.any()


def test_spec_carries_shortcut_and_init_from_the_config(tmp_path):
    cfg = ModelConfig(arch="resnet20", width=4, shortcut="A", init="he_normal")
    spec = spec_for_data(cfg, np.zeros((2, 8, 8, 1), np.uint8), 3, "digits")
    assert (spec.shortcut, spec.init) == ("A", "he_normal")
    model = build_classifier(spec)
    save_classifier(model, tmp_path / "m.pt")
    loaded = load_classifier(tmp_path / "m.pt")
    assert loaded.spec == spec and not any(p.numel() for b in loaded.backbone.blocks for p in b.shortcut.parameters())
