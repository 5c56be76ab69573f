"""The LoRA adapter exported for diffusers: `StableDiffusionPipeline.load_lora_weights(folder)` loads it, and the
pipeline's UNet then predicts what the project's own (peft) adapter predicts."""

from __future__ import annotations

import torch

from synthgap.realfake.base_model import build_tiny
from synthgap.realfake.finetune import DIFFUSERS_LORA, LoraSpec, add_lora, export_diffusers_lora

WORDS = ["photo", "of", "digit", "one"]


def tiny(tmp_path):
    return build_tiny(8, WORDS, tmp_path / "tok", seed=0, width=16, text_width=16)


def test_the_exported_adapter_loads_into_a_diffusers_pipeline_and_predicts_the_same(tmp_path):
    from diffusers import StableDiffusionPipeline

    ours = tiny(tmp_path)
    add_lora(ours.unet, LoraSpec(rank=4, alpha=8.0), seed=0)  # alpha != rank: the scale must travel too
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter (B starts at zero, which would hide a wrong export)
        for name, p in ours.unet.named_parameters():
            if "lora" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    path = export_diffusers_lora(tmp_path / "adapter", ours.unet)
    assert path == tmp_path / "adapter" / DIFFUSERS_LORA

    base = tiny(tmp_path)  # the same random base model, no adapter
    pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=base.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    x, t, states = torch.randn(2, 4, 4, 4, generator=gen), torch.tensor([10, 500]), torch.randn(2, 77, 16, generator=gen)
    with torch.no_grad():
        before = pipe.unet(x, t, encoder_hidden_states=states).sample
        pipe.load_lora_weights(tmp_path / "adapter")
        theirs = pipe.unet(x, t, encoder_hidden_states=states).sample
        expected = ours.unet(x, t, encoder_hidden_states=states).sample
    assert not torch.allclose(before, expected, atol=1e-3)  # the adapter changes the prediction
    torch.testing.assert_close(theirs, expected, rtol=1e-5, atol=1e-5)
