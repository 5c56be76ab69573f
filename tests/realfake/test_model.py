"""The tiny Stable Diffusion stand-in: same classes as SD, a few steps, fixed seeds (diffusers-test style)."""

import shutil

import numpy as np
import pytest
import torch

from synthgap.errors import UserError
from synthgap.realfake.base_model import build_tiny, encode_prompts, load_base_model, save_base_model
from synthgap.realfake.finetune import LoraSpec, UnetTraining, load_adapter, pretrain_vae, save_adapter, train_unet
from synthgap.realfake.guidance import guidance_embeddings, image_embeddings, insert_guidance, make_projection
from synthgap.realfake.synthesis import SynthesisSpec, synthesize

WORDS = ["photo", "of", "digit", "zero", "one", "best", "quality"]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images[:256] * 255 / 16).round().astype(np.uint8)).unsqueeze(1)
    return x, torch.from_numpy(d.target[:256].astype(np.int64))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, digits):
    """A saved stand-in whose VAE has been trained a little (so reconstructions resemble the input)."""
    root = tmp_path_factory.mktemp("sd")
    model = build_tiny(8, WORDS, root / "tok", seed=0, width=16, text_width=16)
    pretrain_vae(model.vae, digits[0], steps=200, batch_size=64, lr=2e-3, resolution=8, seed=0)
    save_base_model(model, root / "sd", vision=root / "sd" / "image_encoder")
    return root / "sd"


def load(folder):
    return load_base_model(folder, folder / "image_encoder")


def lora_settings(steps=4, **kw):
    return UnetTraining(steps=steps, batch_size=8, lr=1e-2, resolution=8, **kw)


def test_lora_changes_only_adapter_weights(folder, digits):
    model = load(folder)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    tokens = image_embeddings(model.image_encoder, digits[0][:32])
    train_unet(model, digits[0][:32], ["photo of digit one"] * 32, tokens, lora_settings(), seed=0, log_every=1)
    after = model.unet.state_dict()
    adapter = [k for k in after if "lora_" in k]
    assert adapter and all(".base_layer." in k or "lora_" in k for k in after if k not in before)
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora_" not in k}
    assert base.keys() == before.keys()
    assert all(torch.equal(base[k], before[k]) for k in before)
    assert any(not torch.equal(after[k], torch.zeros_like(after[k])) for k in adapter if "lora_B" in k)
    assert all(not p.requires_grad for p in model.vae.parameters())


def test_adapter_round_trip_and_exact_resume(folder, digits, tmp_path):
    x, prompts = digits[0][:32], ["photo of digit zero"] * 32
    model = load(folder)
    tokens = image_embeddings(model.image_encoder, x)
    projection, log = train_unet(model, x, prompts, tokens, lora_settings(steps=6), seed=1, log_every=1)
    save_adapter(tmp_path / "adapter.pt", model.unet, LoraSpec(), projection, {"guidance": "image"})
    again = load(folder)
    _, settings = load_adapter(tmp_path / "adapter.pt", again)
    assert settings == {"guidance": "image"}
    for k, v in model.unet.state_dict().items():
        assert torch.equal(v, again.unet.state_dict()[k]), k

    # killed after step 4 (state every 2 steps), rerun: the same adapter as the uninterrupted run
    state = tmp_path / "state.pt"
    killed = load(folder)

    def crash(record):
        if record["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_unet(killed, x, prompts, tokens, lora_settings(steps=6), seed=1, log_every=1, state_path=state,
                   state_every=2, on_log=crash)
    assert state.exists()
    resumed = load(folder)
    _, log2 = train_unet(resumed, x, prompts, tokens, lora_settings(steps=6), seed=1, log_every=1,
                         state_path=state, state_every=2)
    assert not state.exists() and [r["loss"] for r in log2] == pytest.approx([r["loss"] for r in log], rel=1e-6)
    for k, v in model.unet.state_dict().items():
        torch.testing.assert_close(resumed.unet.state_dict()[k], v, rtol=0, atol=1e-7)


def test_guidance_token_lands_in_the_last_slot(folder):
    model = load(folder)
    states = encode_prompts(model, ["photo of digit one", "photo of digit zero"])
    tokens = torch.randn(2, states.shape[-1])
    out = insert_guidance(states, tokens)
    assert out.shape == states.shape
    torch.testing.assert_close(out[:, :-1], states[:, :-1])
    torch.testing.assert_close(out[:, -1], tokens)
    wide = torch.randn(2, 3 * states.shape[-1])
    projection = make_projection(wide.shape[1], states.shape[-1], seed=0)
    torch.testing.assert_close(insert_guidance(states, wide, projection)[:, -1], projection(wide))
    labels = torch.tensor([0, 1, 0, 1])
    means = guidance_embeddings(torch.arange(8.0).view(4, 2), labels, "class_mean")
    torch.testing.assert_close(means, torch.tensor([[2.0, 3.0], [4.0, 5.0], [2.0, 3.0], [4.0, 5.0]]))


def test_img2img_with_strength_zero_returns_nearly_the_input(folder, digits):
    model = load(folder)
    x = digits[0][:16]
    out = synthesize(model, SynthesisSpec(strength=0.0, steps=30, resolution=8), ["photo of digit one"] * 16,
                     list(range(16)), sources=x, out_channels=1, out_size=8)
    assert out.shape == x.shape and out.dtype == torch.uint8
    error = (out.float() - x.float()).abs().mean() / 255
    assert error < 0.12, error  # the VAE's reconstruction error after 200 steps
    noisy = synthesize(model, SynthesisSpec(strength=0.9, steps=4, resolution=8), ["photo of digit one"] * 16,
                       list(range(16)), sources=x, out_channels=1, out_size=8)
    assert (noisy.float() - x.float()).abs().mean() / 255 > error


def test_per_image_seeds_make_sets_independent_of_the_batch_size(folder, digits):
    model = load(folder)
    x, prompts = digits[0][:6], ["photo of digit zero"] * 6
    kw = dict(sources=x, out_channels=1, out_size=8)
    a = synthesize(model, SynthesisSpec(steps=4, resolution=8, batch_size=6), prompts, [5, 6, 7, 8, 9, 10], **kw)
    b = synthesize(model, SynthesisSpec(steps=4, resolution=8, batch_size=4), prompts, [5, 6, 7, 8, 9, 10], **kw)
    assert torch.equal(a, b)
    c = synthesize(model, SynthesisSpec(mode="txt2img", steps=4, resolution=8), prompts, [1, 2, 3, 4, 5, 6],
                   out_channels=1, out_size=8)
    assert c.shape == (6, 1, 8, 8)


def test_a_folder_missing_a_component_is_named(folder, tmp_path):
    broken = tmp_path / "sd"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(UserError, match="has no vae/ component") as err:
        load_base_model(broken)
    assert "diffusion_pytorch_model.safetensors (AutoencoderKL)" in err.value.fix
    with pytest.raises(UserError, match="no folder"):
        load_base_model(tmp_path / "nothing")
