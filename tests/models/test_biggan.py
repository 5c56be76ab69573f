"""BigGAN-deep block layouts: "studiogan" (the official GaFi / StudioGAN blocks) and "compact"."""

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrize import is_parametrized

from synthgap.config import GanConfig
from synthgap.models.biggan import Discriminator, GanSpec, GBlock, Generator, StudioDBlock

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(z_dim=8, shared_dim=8, g_width=4, d_width=4, depth=2)


def small(size, blocks):
    return GanSpec(3, size, 3, **SMALL, attention_resolution=16 if size == 32 else 0, blocks=blocks)


def skip_layout(blocks):
    return [b.conv_skip is not None for b in blocks if isinstance(b, (GBlock, StudioDBlock))]


@pytest.mark.parametrize("blocks", ["studiogan", "compact"])
@pytest.mark.parametrize("size", [8, 32])
def test_output_shapes(size, blocks):
    torch.manual_seed(0)
    g, d = Generator(small(size, blocks)), Discriminator(small(size, blocks))
    y = torch.tensor([0, 1, 2])
    x = g(torch.randn(3, 8), y)
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert d(x, y).shape == (3,)


def test_old_specs_rebuild_compact_and_the_config_default_is_studiogan():
    old = {k: v for k, v in asdict(small(8, "compact")).items() if k != "blocks"}  # a checkpoint before the key
    assert GanSpec(**old).blocks == "compact" and not any(skip_layout(Generator(GanSpec(**old)).blocks))
    assert GanConfig().blocks == "studiogan"
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["gafi"]["gan"]["blocks"] == "compact"
    assert yaml.safe_load((ROOT / "params/cifar10.yaml").read_text())["gafi"]["gan"]["blocks"] == "studiogan"
    with pytest.raises(ValueError):
        GanSpec(3, 8, 1, blocks="legacy")


@pytest.mark.parametrize("size, g_blocks, d_skips", [
    (8, 2, [True, False, False, False]),  # D: 8 -> 4 (first block), then a 4x4 stage
    (32, 6, [True, False, True, False, False, False]),  # D: 32 -> 16 (first), 16 -> 8 (down), an 8x8 stage
])
def test_studiogan_skip_convs(size, g_blocks, d_skips):
    g, d = Generator(small(size, "studiogan")), Discriminator(small(size, "studiogan"))
    assert skip_layout(g.blocks) == [True] * g_blocks  # every G block: learned 1x1 SN conv on the skip
    assert all(b.conv_skip.weight.shape == (16, 16, 1, 1) for b in g.blocks if isinstance(b, GBlock))
    assert "blocks.0.conv_skip.parametrizations.weight.original" in dict(g.named_parameters())
    assert g.out_bn.eps == g.blocks[0].bn[0].bn.eps == 1e-5  # GaFi code: bn_epsilon 1e-5 (compact: 1e-4)
    assert skip_layout(d.blocks) == d_skips  # D: the first and the downsampling blocks only
    assert d.stem.weight.shape[0] == 4 and d.blocks[0].conv_skip.weight.shape == (16, 4, 1, 1)
    compact = Discriminator(small(size, "compact"))
    assert not any(skip_layout(Generator(small(size, "compact")).blocks))
    assert Generator(small(size, "compact")).out_bn.eps == 1e-4
    assert compact.stem.weight.shape[0] == 16 and not any(isinstance(b, StudioDBlock) for b in compact.blocks)


@pytest.mark.parametrize("blocks", ["studiogan", "compact"])
def test_spectral_norm_where_the_official_code_applies_it(blocks):
    """GaFi code: SN on every conv, dense, CBN gain/bias and D embedding; not on G's shared embedding or BN."""
    spec = small(32, blocks)
    for net in (Generator(spec), Discriminator(spec)):
        for name, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) or (isinstance(m, nn.Embedding) and name != "shared"):
                assert is_parametrized(m, "weight"), name
            elif isinstance(m, (nn.Embedding, nn.BatchNorm2d)):
                assert not is_parametrized(m), name


def conv(x, layer, relu=True):
    return F.conv2d(F.relu(x) if relu else x, layer.weight, layer.bias, padding=layer.weight.shape[-1] // 2)


@pytest.mark.parametrize("first", [True, False])
def test_studio_d_block_pools_before_the_last_relu(first):
    torch.manual_seed(0)
    block = StudioDBlock(4, 8, downsample=True, first=first).eval()  # eval: SN weights stay fixed
    x = torch.randn(2, 4, 8, 8)
    h = conv(conv(conv(x, block.conv1), block.conv2), block.conv3)
    skip = F.conv2d(F.avg_pool2d(x, 2), block.conv_skip.weight, block.conv_skip.bias)
    torch.testing.assert_close(block(x), conv(F.avg_pool2d(h, 2), block.conv4) + skip)  # pool, ReLU, 1x1
    relu_first = conv(F.avg_pool2d(F.relu(h), 2), block.conv4, relu=False) + skip  # the compact order
    assert not torch.allclose(block(x), relu_first)


def test_studio_g_block_skip_is_a_1x1_conv_of_the_upsampled_input():
    torch.manual_seed(0)
    block = GBlock(8, 8, cond_dim=6, upsample=True, learned_skip=True, eps=1e-5).eval()
    x, cond = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    up = lambda t: t.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest x2
    bn = block.bn
    h = F.relu(bn[1](conv(bn[0](x, cond), block.conv1), cond))
    h = conv(bn[2](conv(up(h), block.conv2, relu=False), cond), block.conv3)
    h = conv(bn[3](h, cond), block.conv4)
    skip = F.conv2d(up(x), block.conv_skip.weight, block.conv_skip.bias)
    torch.testing.assert_close(block(x, cond), h + skip)
    assert all(b.bn.eps == 1e-5 for b in bn)


def test_paper_size_parameter_counts(monkeypatch):
    """CIFAR-10 32x32, z 128, shared 128, width 128, depth 2, attention at 16, 10 classes, counted by hand.

    No official count is published (GaFi README / paper, StudioGAN README), so the reference is this arithmetic.
    """
    monkeypatch.setattr(nn.init, "orthogonal_", lambda w: w)  # init is irrelevant to counting; keeps it fast
    spec = GanSpec(10, 32, 3, blocks="studiogan")
    count = lambda net: sum(p.numel() for p in net.parameters())

    c, hid, cond = 512, 128, 256  # 4 * width, c // 4, z + shared
    conv = lambda i, o, k: i * o * k * k + o  # weight + bias
    attention = 2 * c * (c // 8) + 2 * c * (c // 2) + 1  # theta, phi, g, o (no biases) + gamma
    g_block = (2 * cond * (c + 3 * hid)  # CBN gain and bias (no bias) before conv1..conv4
               + conv(c, hid, 1) + 2 * conv(hid, hid, 3) + conv(hid, c, 1)
               + conv(c, c, 1))  # learned skip
    g_total = (10 * 128  # shared embedding
               + cond * c * 16 + c * 16  # linear to 4x4x512
               + 6 * g_block + attention  # 3 resolutions x depth 2, attention at 16
               + 2 * c + conv(c, 3, 3))  # output BN (affine) and 3x3 conv
    assert g_block == 1_148_288 and g_total == 9_338_884
    assert count(Generator(spec)) == g_total

    d_body = lambda i: conv(i, hid, 1) + 2 * conv(hid, hid, 3) + conv(hid, c, 1)
    d_total = (conv(3, 128, 3)  # stem to the base width
               + d_body(128) + conv(128, c, 1)  # first block 128 -> 512, 1x1 skip
               + d_body(c) + attention  # second 32->16 block, attention at 16
               + d_body(c) + conv(c, c, 1) + d_body(c)  # 16 -> 8 (1x1 skip), then one more
               + 2 * d_body(c)  # the 8x8 stage
               + (c + 1) + 10 * c)  # linear head and projection embedding
    assert d_total == 3_177_730
    assert count(Discriminator(spec)) == d_total
    # the compact layout drops the 6 G skip convs and has the 4x stem without the two D skip convs
    compact = GanSpec(10, 32, 3)
    assert count(Generator(compact)) == g_total - 6 * conv(c, c, 1)
    assert count(Discriminator(compact)) == d_total - conv(3, 128, 3) + conv(3, c, 3) - conv(128, c, 1) \
        - conv(c, c, 1) - conv(128, hid, 1) + conv(c, hid, 1)
