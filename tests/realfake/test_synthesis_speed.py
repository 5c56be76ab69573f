"""The speed-ups of ``synthesize`` compute what the plain way does: each distinct prompt encoded once, and the LoRA
adapter folded into the attention weights for a call (then put back untouched)."""

import pytest
import torch

from synthgap.realfake.base_model import build_tiny, encode_prompts
from synthgap.realfake.finetune import LoraSpec, add_lora
from synthgap.realfake.synthesis import SynthesisSpec, encode_distinct, merged_lora, synthesize

WORDS = ["photo", "of", "digit", "zero", "one", "best", "quality"]


@pytest.fixture()
def model(tmp_path):
    model = build_tiny(8, WORDS, tmp_path / "tok", seed=0, width=16, text_width=16)
    add_lora(model.unet, LoraSpec(), seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # lora_B starts at zero: give the adapter something to add
        for name, p in model.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for net in (model.unet, model.vae, model.text_encoder):
        net.requires_grad_(False).eval()
    return model


def test_distinct_prompts_are_encoded_once_with_the_same_states(model):
    prompts = ["photo of digit zero", "photo of digit one", "photo of digit zero", "best quality", "photo of digit one"]
    calls = []
    tokenizer = model.tokenizer

    class Counting:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, texts, **kw):
            calls.append(list(texts))
            return tokenizer(texts, **kw)

    per_image = encode_prompts(model, prompts)
    model.tokenizer = Counting()
    try:
        states = encode_distinct(model, prompts)
    finally:
        model.tokenizer = tokenizer
    assert calls == [["photo of digit zero", "photo of digit one", "best quality"]]
    assert states.shape == per_image.shape
    torch.testing.assert_close(states, per_image, rtol=1e-5, atol=1e-6)


def test_merged_lora_matches_the_adapter_at_its_scale_and_restores_the_unet(model):
    unet = model.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 4, 4, generator=gen)
    states = torch.randn(3, 16, 16, generator=gen)
    t = torch.tensor(400)
    with torch.no_grad():
        reference = unet(x, t, encoder_hidden_states=states, cross_attention_kwargs={"scale": 0.5}).sample
        plain = unet(x, t, encoder_hidden_states=states).sample
        with merged_lora(unet, 0.5) as merged:
            assert merged
            assert not any("lora_" in k for k in unet.state_dict())
            fused = unet(x, t, encoder_hidden_states=states).sample
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(reference, plain, atol=1e-4)  # the adapter does change the output
    after = unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_synthesis_with_a_merged_adapter_stays_independent_of_the_batch_size(model):
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    prompts = ["photo of digit zero", "photo of digit one"] * 2 + ["photo of digit zero"]
    kw = dict(sources=x, out_channels=1, out_size=8)
    a = synthesize(model, SynthesisSpec(steps=4, resolution=8, batch_size=5), prompts, [3, 4, 5, 6, 7], **kw)
    b = synthesize(model, SynthesisSpec(steps=4, resolution=8, batch_size=2), prompts, [3, 4, 5, 6, 7], **kw)
    assert torch.equal(a, b)
    assert any("lora_" in k for k in model.unet.state_dict())  # the adapter is back after the call
