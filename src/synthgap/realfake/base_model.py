"""The Stable Diffusion base model: its folder layout, loading, and a tiny stand-in built from small configs.

A base model is a folder in the diffusers layout::

    <folder>/unet/            UNet2DConditionModel      <folder>/text_encoder/  CLIPTextModel
    <folder>/vae/             AutoencoderKL             <folder>/tokenizer/     CLIPTokenizer
    <folder>/scheduler/       the training noise schedule (DDPMScheduler config)

plus a CLIP vision model folder (``CLIPVisionModelWithProjection``) for visual guidance, e.g.
``openai/clip-vit-large-patch14``. SD-1.5 and ViT-L/14 are downloaded by the user (see the README); no weights
can be fetched here. ``build_tiny`` writes a model of the same classes from small configs (and a tiny
word-level CLIP tokenizer), which is what the tests and the embedded default use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from synthgap.errors import UserError

COMPONENTS = {
    "unet": "config.json + diffusion_pytorch_model.safetensors (UNet2DConditionModel)",
    "vae": "config.json + diffusion_pytorch_model.safetensors (AutoencoderKL)",
    "text_encoder": "config.json + model.safetensors (CLIPTextModel)",
    "tokenizer": "tokenizer files (CLIPTokenizer)",
    "scheduler": "scheduler_config.json",
}
HOW_TO_GET = "download a diffusers Stable Diffusion folder, e.g. `hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir models/external/sd-1.5`"


@dataclass
class BaseModel:
    """The networks of a base model (frozen except for what finetuning adds) and its schedule."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object  # DDPMScheduler (training); synthesis builds UniPC from its config
    image_encoder: torch.nn.Module | None = None

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device, dtype=None) -> BaseModel:
        for net in (self.unet, self.vae, self.text_encoder, self.image_encoder):
            if net is not None:
                net.to(device, dtype) if dtype is not None else net.to(device)
        return self


def check_folder(folder: Path, vision: Path | None = None) -> None:
    """One line naming the first missing component and what belongs there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"realfake.base_model: no folder {folder}", HOW_TO_GET + ", or run `dvc repro pretrain_base_model`")
    for name, what in COMPONENTS.items():
        sub = folder / name
        if not sub.is_dir() or not any(sub.iterdir()):
            raise UserError(f"Stable Diffusion folder {folder} has no {name}/ component",
                            f"put {what} in {sub} ({HOW_TO_GET})")
    if vision is not None and not (Path(vision) / "config.json").is_file():
        raise UserError(f"realfake.vision_model: no CLIP vision model in {vision}",
                        "download openai/clip-vit-large-patch14 there, or set realfake.guidance: none")


def load_base_model(folder: Path, vision: Path | None = None, device="cpu") -> BaseModel:
    """``from_pretrained`` of every component (weights as safetensors; nothing is unpickled)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    check_folder(folder, vision)
    folder = Path(folder)
    try:
        model = BaseModel(
            unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
            vae=AutoencoderKL.from_pretrained(folder / "vae"),
            text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
            scheduler=DDPMScheduler.from_pretrained(folder / "scheduler"),
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(vision) if vision is not None else None,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load the Stable Diffusion folder {folder} ({str(err).splitlines()[0][:160]})",
                        f"check that every component is complete ({HOW_TO_GET})") from None
    for net in (model.unet, model.vae, model.text_encoder, model.image_encoder):
        if net is not None:
            net.requires_grad_(False).eval()
    return model.to(device)


def save_base_model(model: BaseModel, folder: Path, vision: Path | None = None) -> None:
    """Write the diffusers layout (and the vision model to ``vision``), each component atomically enough:
    into a temporary sibling folder that replaces ``folder`` at the end."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.unet.save_pretrained(tmp / "unet")
    model.vae.save_pretrained(tmp / "vae")
    model.text_encoder.save_pretrained(tmp / "text_encoder")
    model.tokenizer.save_pretrained(tmp / "tokenizer")
    model.scheduler.save_pretrained(tmp / "scheduler")
    if model.image_encoder is not None and vision is not None:
        model.image_encoder.save_pretrained(tmp / Path(vision).name)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


# ------------------------------------------------------------------------------------------- tiny stand-in
def write_tokenizer(folder: Path, words: list[str]):
    """A CLIP BPE tokenizer whose vocabulary is the byte-level characters of ``words`` (plus a-z, 0-9 and
    punctuation, so any prompt tokenizes) with whole-word merges for ``words``."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789,.-'_" + "".join(words)))
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: dict[str, None] = {}
    for word in sorted(set(words)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges[f"{pieces[0]} {pieces[1]}"] = None
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def tiny_configs(image_size: int, width: int = 32, text_width: int = 32, vocab_size: int = 256) -> dict:
    """Small configs for SD's classes: VAE /2 (latents image_size/2), two-level UNet with cross-attention."""
    return {
        "vae": dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(width // 2, width),
                    layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=image_size,
                    scaling_factor=1.0),
        "unet": dict(sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
                     block_out_channels=(width, 2 * width), norm_num_groups=8, cross_attention_dim=text_width,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8),
        "text_encoder": dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=2 * text_width,
                             num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                             projection_dim=text_width, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        "vision": dict(image_size=16, patch_size=4, hidden_size=text_width, intermediate_size=2 * text_width,
                       num_hidden_layers=2, num_attention_heads=2, projection_dim=text_width),
        "scheduler": dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
    }


def sd15_configs() -> dict:
    """SD-1.5's architecture (for benchmarks with random weights; the real model is downloaded)."""
    return {
        "vae": dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                    layers_per_block=2, latent_channels=4, sample_size=512),
        "unet": dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                     block_out_channels=(320, 640, 1280, 1280), layers_per_block=2),
        "text_encoder": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, max_position_embeddings=77, projection_dim=768),
        # openai/clip-vit-large-patch14's vision tower (the Real-Fake guidance encoder)
        "vision": dict(image_size=224, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                       num_attention_heads=16, projection_dim=768),
        "scheduler": tiny_configs(8)["scheduler"],
    }


def build_tiny(image_size: int, words: list[str], tokenizer_dir: Path, seed: int = 0, width: int = 32,
               text_width: int = 32) -> BaseModel:
    """Randomly initialised SD components from ``tiny_configs`` (the tokenizer is written to ``tokenizer_dir``)."""
    tokenizer = write_tokenizer(tokenizer_dir, words)
    return random_model(tiny_configs(image_size, width, text_width, vocab_size=len(tokenizer)), tokenizer, seed)


def build_sd15(words: list[str], tokenizer_dir: Path, seed: int = 0, vision_layers: int = 24) -> BaseModel:
    """Stable Diffusion 1.5's architecture with random weights (``sd15_configs``), for tests and benchmarks of the
    paper-scale path without a download: the UNet, VAE and text encoder at full size, the CLIP ViT-L/14 vision
    tower with ``vision_layers`` of its 24 layers (its widths and projection kept; 0: none). The tokenizer knows
    ``words`` (``write_tokenizer``) and pads to SD's 77 tokens."""
    cfg = sd15_configs()
    cfg["vision"] = {**cfg["vision"], "num_hidden_layers": vision_layers} if vision_layers else None
    tokenizer = write_tokenizer(tokenizer_dir, words)
    tokenizer.model_max_length = 77
    return random_model(cfg, tokenizer, seed)


def random_model(cfg: dict, tokenizer, seed: int) -> BaseModel:
    """SD's classes from ``cfg`` (as :func:`tiny_configs` writes it; ``cfg["vision"]`` None: no vision tower),
    weights drawn after ``torch.manual_seed(seed)``."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return BaseModel(
        unet=UNet2DConditionModel(**cfg["unet"]),
        vae=AutoencoderKL(**cfg["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
        tokenizer=tokenizer,
        scheduler=DDPMScheduler(**cfg["scheduler"]),
        image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg["vision"])) if cfg["vision"] else None,
    )


# ------------------------------------------------------------------------------------------- shared steps
def to_model_pixels(x_uint8: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float RGB in [-1, 1] at ``resolution`` (grey repeats to 3 channels)."""
    from torch.nn import functional as F

    x = x_uint8.float().div(127.5).sub(1.0)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bicubic", align_corners=False).clamp(-1, 1)
    return x


def from_model_pixels(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Float RGB in [0, 1] -> uint8 (N, channels, size, size) (RGB averages to grey)."""
    from torch.nn import functional as F

    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    x = x.mean(1, keepdim=True) if channels == 1 else x
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


def prompt_ids(model: BaseModel, prompts: list[str]) -> torch.Tensor:
    """Token ids (N, L) on the text encoder's device, padded to the tokenizer's length as SD does."""
    device = next(model.text_encoder.parameters()).device
    return model.tokenizer(prompts, padding="max_length", max_length=model.tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids.to(device)


@torch.no_grad()
def encode_prompts(model: BaseModel, prompts: list[str]) -> torch.Tensor:
    """Text-encoder hidden states (N, L, D) of :func:`prompt_ids`."""
    return model.text_encoder(prompt_ids(model, prompts))[0]


@torch.no_grad()
def encode_latents(model: BaseModel, pixels: torch.Tensor, gen: torch.Generator | None = None,
                   batch_size: int = 256) -> torch.Tensor:
    """VAE latents (sampled from the posterior with ``gen``) times the scaling factor."""
    out = [model.vae.encode(pixels[i : i + batch_size]).latent_dist.sample(gen) for i in range(0, len(pixels), batch_size)]
    return torch.cat(out) * model.vae.config.scaling_factor
