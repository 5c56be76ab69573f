"""What the Real-Fake stages share: the prompts of the training images, the base model they load, the four
finetune variants of the ablation, and one classifier training per table cell.

Variants (Table 2 columns *Visual Guidance*, *Distribution Matching*, *Finetune*): ``base`` (no LoRA), ``plain``
(LoRA with the diffusion loss only), ``guidance`` (+ visual guidance), ``matching`` (+ distribution matching),
``full`` (both). The *Latent Prior* column is the synthesis mode: ``img2img`` (from each real image) or
``txt2img``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthgap.config import RealFakeConfig
from synthgap.data.fonts import Corpus, render_corpus, require_digits
from synthgap.data.processed import ProcessedData
from synthgap.errors import UserError
from synthgap.noise import image_seeds
from synthgap.realfake.base_model import BaseModel, load_base_model
from synthgap.realfake.finetune import LoraSpec, UnetTraining
from synthgap.realfake.synthesis import SynthesisSpec, class_prompt
from synthgap.stats import estimate

VARIANTS = {  # name -> (visual guidance, distribution matching); "base" has no adapter at all
    "plain": (False, False),
    "guidance": (True, False),
    "matching": (False, True),
    "full": (True, True),
}


def class_words(cfg: RealFakeConfig, data: ProcessedData) -> tuple[str, ...]:
    if cfg.class_names is None:
        return data.classes
    if len(cfg.class_names) != data.num_classes:
        raise UserError(f"realfake.class_names has {len(cfg.class_names)} names for {data.num_classes} classes",
                        "give one name per class in class order, or null")
    return cfg.class_names


def captions(cfg: RealFakeConfig, root: Path, n: int) -> list[str | None]:
    if cfg.captions is None:
        return [None] * n
    path = root / cfg.captions
    try:
        items = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"realfake.captions: cannot read {path} ({type(err).__name__})",
                        "give a JSON list with one caption per training image, or null") from None
    if not isinstance(items, list) or len(items) != n:
        raise UserError(f"realfake.captions: {path} must be a JSON list of {n} captions (one per training image)",
                        "regenerate it for the current train split, or set realfake.captions: null")
    return [str(c) if c else None for c in items]


def prompts_for(cfg: RealFakeConfig, data: ProcessedData, root: Path, indices: np.ndarray | None = None) -> list[str]:
    """``photo of {class}, {caption}, best quality`` for each training image (or those at ``indices``)."""
    words = class_words(cfg, data)
    caps = captions(cfg, root, len(data.y_train))
    indices = np.arange(len(data.y_train)) if indices is None else indices
    return [class_prompt(words[data.y_train[i]], caps[i], cfg.prompt_template) for i in indices]


def pretrain_corpus(cfg: RealFakeConfig, data: ProcessedData, root: Path, seed: int) -> Corpus:
    """The stand-in's pretraining images and captions (``realfake.pretrain.corpus``): the font-rendered digits
    (``fonts``, at the dataset's image shape), or the train split with its prompts (``train``)."""
    if cfg.pretrain.corpus == "train":
        return Corpus(data.x_train, data.y_train, prompts_for(cfg, data, root), ["train"] * len(data.y_train))
    require_digits(data.classes, "realfake.pretrain.corpus: fonts", "set realfake.pretrain.corpus: train")
    h, _, c = data.image_shape
    return render_corpus(cfg.pretrain.corpus_images, class_words(cfg, data), h, c, seed)


def model_folders(cfg: RealFakeConfig, stand_in: Path, root: Path) -> tuple[Path, Path | None]:
    """(Stable Diffusion folder, CLIP vision folder): the configured ones (relative to ``root``), or the
    stand-in's (pretrain_base_model's folder ``stand_in``)."""
    base = root / cfg.base_model if cfg.base_model else stand_in
    vision = root / cfg.vision_model if cfg.vision_model else base / "image_encoder"
    return base, vision


def load_model(cfg: RealFakeConfig, stand_in: Path, root: Path, device, with_vision: bool = True) -> BaseModel:
    base, vision = model_folders(cfg, stand_in, root)
    return load_base_model(base, vision if with_vision else None, device)


def finetune_settings(cfg: RealFakeConfig, variant: str, steps: int | None = None, device=None) -> UnetTraining:
    guidance, matching = VARIANTS[variant]
    ft = cfg.finetune
    mixed = ft.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if device is not None and torch.device(device).type == "cuda" else "no"
    return UnetTraining(
        steps=steps or ft.steps, batch_size=ft.batch_size, lr=ft.lr, resolution=cfg.resolution,
        lora=LoraSpec(ft.rank, ft.alpha, tuple(ft.targets)), snr_gamma=ft.snr_gamma,
        distribution=ft.distribution if matching else "none", distribution_weight=ft.weight,
        guidance=ft.guidance if guidance else "none", flip=cfg.flip, weight_decay=ft.weight_decay,
        max_grad_norm=ft.max_grad_norm, mixed_precision=mixed,
    )


def synthesis_spec(cfg: RealFakeConfig, mode: str, lora: bool) -> SynthesisSpec:
    s = cfg.synthesis
    return SynthesisSpec(mode=mode, strength=s.strength, steps=s.steps, guidance_scale=s.guidance_scale,
                         lora_scale=s.lora_scale if lora else 1.0, resolution=cfg.resolution, batch_size=s.batch_size)


@dataclass(frozen=True)
class Cell:
    """One classifier run of a table: its training set's parts and the params logged for it."""

    name: str
    table: str
    params: dict


def train_cell(cfg, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int, device,
               evals: dict, desc: str):
    """One classifier (``realfake.classifier``) on uint8 (N, C, H, W) images ``x``; returns (model, result)."""
    from synthgap.models import build_classifier, spec_for_data
    from synthgap.seeding import derive_seed
    from synthgap.train.classifier import train_classifier

    torch.manual_seed(derive_seed(seed, "realfake", "init"))
    model = build_classifier(spec_for_data(cfg.model, x.permute(0, 2, 3, 1).cpu().numpy(), num_classes, "realfake"))
    result = train_classifier(model, (x, y), cfg.train, seed=seed, device=device, evals=evals,
                              eval_every_epoch=False, desc=desc)
    return model, result


def copies_per_trial(cfg: RealFakeConfig, variant: str, mode: str) -> int:
    """Images per training image that one trial of a synthetic set needs (Table 3 scales the ``full`` img2img set)."""
    return max(cfg.scales) if (variant, mode) == ("full", "img2img") else 1


def trial_block(cfg: RealFakeConfig, variant: str, mode: str, n: int, trial: int, copies: int) -> slice:
    """The images of trial ``trial`` in a saved set: its block of ``copies_per_trial`` copies of the n training
    images, of which the first ``copies`` are used (each trial's images have their own seeds)."""
    start = trial * copies_per_trial(cfg, variant, mode) * n
    return slice(start, start + copies * n)


def set_seeds(seed: int, n: int, trials: int, copies: int, stage: str = "synthesize_realfake") -> list[int]:
    """Seeds of a saved set laid out as :func:`trial_block` reads it (trial, then copy, then training image):
    the seed of (trial t, copy c, image i) depends on nothing else, not on the variant, the mode or the copies
    per trial, so every variant of Table 2 (and both modes) starts image i of trial t from the same noise:
    paired sets whose differences are the finetunes'."""
    return torch.cat([image_seeds(seed, torch.arange(n), stage, t, c)
                      for t in range(trials) for c in range(copies)]).tolist()


def set_path(folder: Path, variant: str, mode: str) -> Path:
    """The synthetic set of ``variant`` in ``mode`` in synthesize_realfake's output folder."""
    return folder / f"{variant}_{mode}.npz"


def adapter_path(folder: Path, variant: str) -> Path:
    """The LoRA adapter of ``variant`` in finetune_lora's output folder."""
    return folder / variant / "adapter.pt"


# ------------------------------------------------------------------------------------------- table cells
def training_sets(cfg: RealFakeConfig) -> dict[str, tuple]:
    """Every distinct training set the three tables need: name -> parts, a part being ``("real",)`` or
    ``("synthetic", variant, mode, copies)``."""
    full = ("synthetic", "full", "img2img")
    sets: dict[str, tuple] = {"real": (("real",),), "real_plus_full_img2img": (("real",), (*full, 1))}
    for variant in cfg.ablation:
        for mode in ("img2img", "txt2img"):
            sets[f"{variant}_{mode}"] = (("synthetic", variant, mode, 1),)
    for k in cfg.scales:
        sets.setdefault(scale_set(k), ((*full, k),))
    return sets


def table_rows(cfg: RealFakeConfig, acc: dict[str, dict]) -> dict[str, list[dict]]:
    """Tables 1-3 from the summarised rows of each training set (``acc[name]`` has ``top1_trials``, and
    ``top5_trials`` with more than 10 classes): each cell is mean ± the half-width of its 95 % interval.
    Table 1 has a column ``ood_<name>`` (top-1) per out-of-distribution set of ``realfake.ood``, Table 2 one
    ``reference_top1`` (the real-data classifier's top-1 on the synthetic set itself) when ``acc`` has it."""
    def row(label: dict, name: str, ood: bool = False, recognised: bool = False) -> dict:
        keys = ("top1", "top5", *(f"ood_{s.name}_top1" for s in (cfg.ood if ood else ())),
                *(("reference_top1",) if recognised else ()))
        return {**label, **{k.removesuffix("_top1") if k.startswith("ood_") else k: estimate(acc[name][f"{k}_trials"]).text(2)
                            for k in keys if f"{k}_trials" in acc[name]}, "training_set": name}

    table1 = [row({"data": "real only"}, "real", ood=True), row({"data": "synthetic only"}, "full_img2img", ood=True),
              row({"data": "real + synthetic"}, "real_plus_full_img2img", ood=True)]
    table2 = []
    for mode in ("txt2img", "img2img"):
        for variant in ablation_order(cfg):
            guidance, matching = VARIANTS.get(variant, (False, False))
            table2.append(row({"latent_prior": mode == "img2img", "visual_guidance": guidance,
                               "distribution_matching": matching, "finetune": variant != "base"}, f"{variant}_{mode}",
                              recognised=True))
    table3 = [row({"synthetic_x": k, "real_data": False}, scale_set(k)) for k in cfg.scales]
    table3.append(row({"synthetic_x": 1, "real_data": True}, "real_plus_full_img2img"))
    return {"table1": table1, "table2": table2, "table3": table3}


def ablation_order(cfg: RealFakeConfig) -> list[str]:
    return [v for v in ("base", "plain", "guidance", "matching", "full") if v in cfg.ablation]


def scale_set(k: int) -> str:
    return f"full_img2img_x{k}" if k > 1 else "full_img2img"
