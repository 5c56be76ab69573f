"""The EDM network: its two layouts at known sizes, shapes through every resampling, and the DDPM++ wiring
(class before the mapping layers, residual resampling blocks, attention placement)."""

from __future__ import annotations

import pytest
import torch

from synthgap.models.unet import Attention, ResBlock, UNet, UNetSpec


def count(spec: UNetSpec) -> int:
    return sum(p.numel() for p in UNet(spec).parameters())


def test_the_ddpmpp_cifar10_network_has_edms_56_million_parameters():
    """EDM's conditional CIFAR-10 DDPM++ (width 128, mult 2/2/2, 4 blocks, attention at 16, augment_dim 9):
    55.7 M parameters in NVlabs/edm (55,733,891 with its bias on the label layer)."""
    spec = UNetSpec(10, 32, 3, width=128, channel_mult=(2, 2, 2), blocks=4, attention_resolution=16, dropout=0.13,
                    augment_dim=9, layout="ddpm++")
    assert count(spec) == pytest.approx(55.73e6, rel=0.005)


def test_the_compact_layout_is_unchanged():
    """The layout of every trained digits model so far: 24 M parameters at the former paper-like preset size."""
    spec = UNetSpec(10, 32, 3, width=128, channel_mult=(1, 2, 2), blocks=2, attention_resolution=16)
    assert count(spec) == 23_925_891


@pytest.mark.parametrize("layout", ["compact", "ddpm++"])
def test_every_layout_maps_images_to_images_at_each_size(layout):
    spec = UNetSpec(4, 16, 3, width=8, channel_mult=(1, 2, 2), blocks=2, attention_resolution=8, dropout=0.0,
                    layout=layout)
    net = UNet(spec).eval()
    out = net(torch.randn(3, 3, 16, 16), torch.zeros(3), torch.tensor([0, 1, 3]))
    assert out.shape == (3, 3, 16, 16)


def test_ddpmpp_uses_residual_resampling_blocks_and_attention_where_edm_puts_it():
    spec = UNetSpec(4, 16, 1, width=8, channel_mult=(1, 2, 2), blocks=2, attention_resolution=8, layout="ddpm++")
    net = UNet(spec)
    assert [b.resample for b in net.down if isinstance(b, ResBlock) and b.resample] == ["down", "down"]
    assert [b.resample for b in net.up if isinstance(b, ResBlock) and b.resample] == ["up", "up"]
    # at 8x8: after both encoder blocks, after the last of the three decoder blocks only
    assert sum(isinstance(m, Attention) for m in net.down) == 2 and sum(isinstance(m, Attention) for m in net.up) == 1
    compact = UNet(UNetSpec(4, 16, 1, width=8, channel_mult=(1, 2, 2), blocks=2, attention_resolution=8))
    assert sum(isinstance(m, Attention) for m in compact.up) == 3


def test_ddpmpp_adds_the_class_before_the_mapping_layers():
    """With the mapping layers silenced (all weights and biases zero), a class added before them vanishes
    (DDPM++: silu(MLP(positional + class)) = silu(0)) and one added after them remains (compact)."""
    c_noise, labels = torch.tensor([0.3, -0.2]), torch.tensor([2, 0])
    embeddings = {}
    for layout in ("ddpm++", "compact"):
        net = UNet(UNetSpec(3, 8, 1, width=8, channel_mult=(1,), blocks=1, attention_resolution=0, layout=layout))
        with torch.no_grad():
            for param in net.map_noise.parameters():
                param.zero_()
            net.map_label.weight.fill_(1.0)
            embeddings[layout] = net.embed(c_noise, labels)
    assert not embeddings["ddpm++"].any()
    torch.testing.assert_close(embeddings["compact"], torch.full((2, 32), torch.nn.functional.silu(torch.tensor(1.0)).item()))
    with pytest.raises(ValueError, match="layout"):
        UNet(UNetSpec(3, 8, 1, layout="ddpm"))
