"""Synthesis with diffusers' own pipelines: img2img from each real image (the latent prior) or text-to-image.

Guidance tokens reach the UNet through ``prompt_embeds`` (the text states with the last slot overwritten), so
no forked diffusers is needed. Every image has its own seed (one ``torch.Generator`` per image), so a set does
not depend on the batch size or on how it is sharded (under ``torchrun`` each process makes images
``rank::world``). Defaults are the released code's: strength 0.75, UniPC
30 steps, CFG 2.0, LoRA scale 0.5, prompt ``photo of {class}, {caption}, best quality`` and its negative prompt.

Speed (the same images up to float rounding): each distinct prompt is encoded once (:func:`encode_distinct`; a
set has about one prompt per class when there are no captions), the LoRA adapter is folded into the attention
weights for the duration of a call (:func:`merged_lora`: ``W + scale * B A`` instead of two extra matmuls per
projection), and everything runs under ``torch.inference_mode``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from synthgap.distributed import current, gather_shards
from synthgap.realfake.base_model import BaseModel, encode_prompts, from_model_pixels, to_model_pixels
from synthgap.realfake.guidance import insert_guidance

NEGATIVE_PROMPT = "distorted, unrealistic, blurry, out of frame, cropped, deformed"


def class_prompt(name: str, caption: str | None = None, template: str = "photo of {name}") -> str:
    """``photo of {class}, {caption}, best quality`` (the caption part only when one is given)."""
    base = template.format(name=name)
    return f"{base}, {caption}, best quality" if caption else f"{base}, best quality"


@dataclass(frozen=True)
class SynthesisSpec:
    mode: str = "img2img"  # img2img: latent prior from the real image | txt2img
    strength: float = 0.75
    steps: int = 30
    guidance_scale: float = 2.0
    lora_scale: float = 0.5
    negative_prompt: str = NEGATIVE_PROMPT
    resolution: int = 512
    batch_size: int = 32


def make_pipeline(model: BaseModel, mode: str):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline, UniPCMultistepScheduler

    cls = StableDiffusionImg2ImgPipeline if mode == "img2img" else StableDiffusionPipeline
    pipe = cls(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
               scheduler=UniPCMultistepScheduler.from_config(model.scheduler.config), safety_checker=None,
               feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode_distinct(model: BaseModel, prompts: list[str], batch_size: int = 1024) -> torch.Tensor:
    """:func:`encode_prompts` of every prompt, (N, L, D), each distinct prompt encoded once (rows are
    independent: the same states as encoding them all, up to float rounding)."""
    index: dict[str, int] = {}
    rows = torch.tensor([index.setdefault(p, len(index)) for p in prompts], dtype=torch.long)
    distinct = list(index)
    states = torch.cat([encode_prompts(model, distinct[i : i + batch_size]) for i in range(0, len(distinct), batch_size)])
    return states[rows.to(states.device)]


def _lora_layers(unet: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module]] | None:
    """(parent, attribute, layer) of every peft LoRA layer, or None when one cannot be folded into a plain
    ``nn.Linear`` (not a vanilla active LoRA on a linear layer)."""
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    found = []
    for parent in unet.modules():
        for attr, child in parent.named_children():
            if not isinstance(child, BaseTunerLayer):
                continue
            if (type(child) is not LoraLinear or type(child.base_layer) is not torch.nn.Linear or child.merged
                    or child.disable_adapters or child.fan_in_fan_out or getattr(child, "lora_variant", None)
                    or any(a not in child.lora_A for a in child.active_adapters)):
                return None
            found.append((parent, attr, child))
    return found


@contextmanager
def merged_lora(unet: torch.nn.Module, scale: float):
    """Within the block, every LoRA layer of ``unet`` is replaced by a plain ``nn.Linear`` with weight
    ``W + scale * sum(B A * alpha/r)`` (what the adapter adds at ``cross_attention_kwargs={"scale": scale}``, in
    one matmul); the LoRA layers (and their unchanged base weights) are put back on exit. Yields True when it
    merged, False when there is nothing to merge or a layer cannot be folded (then nothing changes)."""
    layers = _lora_layers(unet) if hasattr(unet, "peft_config") else None
    if not layers:
        yield False
        return
    for parent, attr, layer in layers:
        base = layer.base_layer
        delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters)
        fused = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(base.weight + scale * delta.to(base.weight.dtype))
            if base.bias is not None:
                fused.bias.copy_(base.bias)
        fused.requires_grad_(False)
        setattr(parent, attr, fused)
    try:
        yield True
    finally:
        for parent, attr, layer in layers:
            setattr(parent, attr, layer)


@torch.no_grad()
def synthesize(
    model: BaseModel,
    spec: SynthesisSpec,
    prompts: list[str],
    seeds: list[int],
    *,
    sources: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
    projection: torch.nn.Module | None = None,
    out_channels: int = 3,
    out_size: int | None = None,
    desc: str = "synthesize",
) -> torch.Tensor:
    """uint8 (N, out_channels, out_size, out_size) images, one per prompt and seed; ``sources`` (uint8, for
    img2img) and ``tokens`` (guidance embeddings) are per image too. An img2img strength too small for one
    denoising step (``int(steps * strength) == 0``; diffusers fails there) returns the VAE round trip of the
    sources: no noise added, nothing denoised."""
    if spec.mode == "img2img" and sources is None:
        raise ValueError("img2img needs the source images")
    device = next(model.unet.parameters()).device
    total, dist = len(prompts), current()
    if dist.world > 1:  # under torchrun: images rank::world here, gathered back in order at the end
        mine = list(range(dist.rank, total, dist.world))
        prompts, seeds = [prompts[i] for i in mine], [seeds[i] for i in mine]
        sources = sources[mine] if sources is not None else None
        tokens = tokens[mine] if tokens is not None else None
    with merged_lora(model.unet, spec.lora_scale) as merged, torch.inference_mode():
        images = _synthesize(model, spec, prompts, seeds, sources, tokens, projection, out_channels,
                             out_size or spec.resolution, desc, device, lora_kwargs=not merged)
    return gather_shards(images.clone(), total).cpu()  # clone: a normal tensor, not an inference-mode one


def _synthesize(model, spec, prompts, seeds, sources, tokens, projection, out_channels, out_size, desc, device,
                lora_kwargs: bool) -> torch.Tensor:
    pipe = make_pipeline(model, spec.mode)
    negative = encode_prompts(model, [spec.negative_prompt])
    text = encode_distinct(model, prompts)
    use_kwargs = lora_kwargs and hasattr(model.unet, "peft_config")
    kwargs = {"cross_attention_kwargs": {"scale": spec.lora_scale}} if use_kwargs else {}
    images = []
    for start in tqdm(range(0, len(prompts), spec.batch_size), desc=desc, disable=None):
        part = slice(start, start + spec.batch_size)
        states = text[part]
        states = insert_guidance(states, tokens[part].to(device) if tokens is not None else None, projection)
        generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds[part]]
        call = dict(prompt_embeds=states, negative_prompt_embeds=negative.expand(len(states), -1, -1),
                    num_inference_steps=spec.steps, guidance_scale=spec.guidance_scale, generator=generators,
                    output_type="pt", **kwargs)
        if spec.mode == "img2img" and int(spec.steps * spec.strength) == 0:
            latents = model.vae.encode(to_model_pixels(sources[part].to(device), spec.resolution)).latent_dist.mode()
            out = model.vae.decode(latents).sample.add(1).div(2)
        elif spec.mode == "img2img":
            # diffusers encodes the sources one image at a time when each has its own generator; encoding the
            # batch at once and drawing each posterior sample from its image's generator makes the same draws
            # in a fraction of the time (the pipeline takes 4-channel inputs as initial latents)
            pixels = to_model_pixels(sources[part].to(device), spec.resolution).to(model.vae.dtype)
            latents = model.vae.encode(pixels).latent_dist.sample(generator=generators) * model.vae.config.scaling_factor
            out = pipe(image=latents, strength=spec.strength, **call).images
        else:
            out = pipe(height=spec.resolution, width=spec.resolution, **call).images
        images.append(from_model_pixels(out.float(), out_channels, out_size))
    return torch.cat(images)
