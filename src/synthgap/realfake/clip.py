"""Contrastive pretraining of the stand-in's CLIP towers, and zero-shot classification with them.

Stable Diffusion conditions on a CLIP text encoder trained contrastively against a CLIP image encoder, and
Real-Fake's visual guidance feeds that image encoder's embedding into the text states. The stand-in's towers
(``CLIPTextModel``, ``CLIPVisionModelWithProjection``) are trained the same way on its captioned corpus: the
symmetric InfoNCE loss of Radford et al. (2021) over a batch, with a learned temperature, on the text tower's
pooled (end-of-text) state through a linear text projection and the image tower's ``image_embeds``. The text
projection is used for training and zero-shot scoring only: Stable Diffusion reads the text tower's hidden
states, so the projection is not part of the saved model (SD's folders hold no ``text_projection`` either).
Captions repeat in a batch (a corpus has few distinct wordings per digit): pairs with the same caption are all
positives of each other, each row's target spread evenly over them.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from synthgap.realfake.base_model import BaseModel, prompt_ids
from synthgap.realfake.guidance import clip_pixels
from synthgap.seeding import derive_seed, torch_generator


def text_embeddings(model: BaseModel, projection: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return F.normalize(projection(model.text_encoder(input_ids=ids).pooler_output), dim=-1)


def image_embeds(model: BaseModel, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.image_encoder(pixel_values=pixels).image_embeds, dim=-1)


def pretrain_clip(model: BaseModel, x_uint8: torch.Tensor, captions: list[str], *, steps: int, batch_size: int,
                  lr: float, seed: int, desc: str = "clip") -> tuple[torch.nn.Module, list[dict]]:
    """Train ``model.text_encoder`` and ``model.image_encoder`` contrastively on (image, caption) pairs; both are
    left frozen in eval mode. Returns (the text projection, the loss log)."""
    device = next(model.text_encoder.parameters()).device
    text_width = model.text_encoder.config.hidden_size
    embed_width = model.image_encoder.config.projection_dim
    torch.manual_seed(derive_seed(seed, "clip", "init"))
    projection = torch.nn.Linear(text_width, embed_width, bias=False).to(device)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07), device=device))
    towers = (model.text_encoder, model.image_encoder)
    params = [p for tower in towers for p in tower.parameters()] + list(projection.parameters()) + [log_scale]
    for tower in towers:
        tower.train().requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    warmup = max(1, steps // 10)  # CLIP's schedule: linear warmup, then cosine decay to 0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup))))
    distinct = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_ids = torch.tensor([distinct[c] for c in captions], device=device)
    all_ids = prompt_ids(model, list(distinct))
    size = model.image_encoder.config.image_size
    history, running = [], 0.0
    for step in tqdm(range(steps), desc=desc, disable=None):
        gen = torch_generator(derive_seed(seed, "clip", step), device)
        idx = torch.randint(0, len(captions), (batch_size,), device=device, generator=gen)
        image = image_embeds(model, clip_pixels(x_uint8[idx], size))
        text = text_embeddings(model, projection, all_ids[caption_ids[idx]])
        logits = log_scale.clamp(max=math.log(100)).exp() * image @ text.T
        same = (caption_ids[idx, None] == caption_ids[None, idx]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        running += loss.item()
        if (step + 1) % max(1, steps // 10) == 0:
            history.append({"step": step + 1, "clip_loss": running / max(1, steps // 10)})
            running = 0.0
    for tower in towers:
        tower.eval().requires_grad_(False)
    return projection.requires_grad_(False).eval(), history


@torch.no_grad()
def zero_shot_accuracy(model: BaseModel, projection: torch.nn.Module, x_uint8: torch.Tensor, labels: torch.Tensor,
                       class_prompts: list[str], batch_size: int = 512) -> float:
    """Top-1 accuracy of "the class whose prompt's text embedding is closest to the image's" (CLIP zero-shot)."""
    device = next(model.text_encoder.parameters()).device
    text = text_embeddings(model, projection, prompt_ids(model, class_prompts))
    size = model.image_encoder.config.image_size
    hits = 0
    for i in range(0, len(labels), batch_size):
        image = image_embeds(model, clip_pixels(x_uint8[i : i + batch_size].to(device), size))
        hits += int(((image @ text.T).argmax(1) == labels[i : i + batch_size].to(device)).sum())
    return hits / max(1, len(labels))
