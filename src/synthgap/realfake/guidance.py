"""Visual guidance: a CLIP image embedding overwrites the LAST of the text encoder's output tokens.

The released code writes the per-image embedding into slot L-1 of the (N, L, D) hidden states (the sequence
length stays L); the paper describes the class-mean embedding. ``mode`` picks one: ``image`` (code,
default), ``class_mean`` (paper) or ``none``. When the embedding width differs from the text width (SD-1.5 +
ViT-L/14 match at 768), a linear projection trained with the LoRA adapter maps it.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(x_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> CLIP's input: RGB (grey repeats), bicubic to ``size``, CLIP's normalisation."""
    mean = torch.tensor(CLIP_MEAN, device=x_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x_uint8.device).view(1, 3, 1, 1)
    x = x_uint8.float().div(255.0)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x - mean) / std


@torch.no_grad()
def image_embeddings(encoder: torch.nn.Module, x_uint8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """CLIP ``image_embeds`` of uint8 (N, C, H, W) images (:func:`clip_pixels`)."""
    device = next(encoder.parameters()).device
    size = encoder.config.image_size
    return torch.cat([encoder(pixel_values=clip_pixels(x_uint8[i : i + batch_size].to(device), size)).image_embeds.float()
                      for i in range(0, len(x_uint8), batch_size)])


def guidance_embeddings(embeddings: torch.Tensor, labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """Per-image tokens for ``mode``: the image's own embedding, its class mean, or None."""
    if mode == "none":
        return None
    if mode == "image":
        return embeddings
    if mode == "class_mean":
        num_classes = int(labels.max()) + 1
        sums = torch.zeros(num_classes, embeddings.shape[1], device=embeddings.device).index_add_(0, labels, embeddings)
        counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).unsqueeze(1)
        return (sums / counts)[labels]
    raise ValueError(f"unknown guidance mode '{mode}' (image, class_mean, none)")


def make_projection(embed_dim: int, text_dim: int, seed: int) -> torch.nn.Module | None:
    """None when the widths match; otherwise a seeded linear map, trained with the adapter."""
    if embed_dim == text_dim:
        return None
    gen = torch.Generator().manual_seed(seed)
    proj = torch.nn.Linear(embed_dim, text_dim)
    with torch.no_grad():
        proj.weight.copy_(torch.randn(text_dim, embed_dim, generator=gen) / embed_dim**0.5)
        proj.bias.zero_()
    return proj


def insert_guidance(text_states: torch.Tensor, tokens: torch.Tensor | None,
                    projection: torch.nn.Module | None = None) -> torch.Tensor:
    """``text_states`` (N, L, D) with slot L-1 replaced by ``tokens`` (N, D') (projected to D if needed)."""
    if tokens is None:
        return text_states
    tokens = projection(tokens) if projection is not None else tokens
    if tokens.shape[-1] != text_states.shape[-1]:
        raise ValueError(f"guidance width {tokens.shape[-1]} != text width {text_states.shape[-1]}: give a projection")
    return torch.cat([text_states[:, :-1], tokens.to(text_states.dtype).unsqueeze(1)], dim=1)
