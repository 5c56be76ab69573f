"""Stage pretrain_base_model: the tiny Stable Diffusion stand-in, pretrained on the train split.

A stand-in for a web-scale model, not one: SD's own classes (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel + tokenizer, CLIPVisionModelWithProjection) from small configs, the VAE trained to reconstruct
the training images, then the UNet as a text-conditioned latent diffusion model on "photo of {class}" prompts.
Writes ``--out`` (``models/pretrain_base_model/``) in the diffusers layout (vision model in ``image_encoder/``), read by the
later Real-Fake stages when ``realfake.base_model`` is null; when it is set, only a note saying so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.paths import atomic_write_csv, atomic_write_text, repo_root
from synthgap.realfake.base_model import build_tiny, save_base_model
from synthgap.realfake.finetune import UnetTraining, pretrain_vae, train_unet
from synthgap.realfake.pipeline import prompts_for
from synthgap.realfake.synthesis import NEGATIVE_PROMPT
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from synthgap.train.state import state_file
from stages.common import realfake_params

STAGE = "pretrain_base_model"


def main() -> None:
    params, paths = realfake_params(STAGE, "data", "out", "reports")
    cfg, pre = params.section, params.section.pretrain
    device = resolve_device(params.device)
    with StageRun(params, experiment="realfake") as run:
        if cfg.base_model:
            atomic_write_text(paths.out / "NOT_USED.txt", f"realfake.base_model is {cfg.base_model}\n")
            atomic_write_text(paths.reports / "NOT_USED.txt", "no stand-in trained\n")
            print(f"{STAGE}: realfake.base_model is set ({cfg.base_model}); no stand-in needed")
            return
        data = load_processed(paths.data)
        prompts = prompts_for(cfg, data, repo_root())
        words = " ".join(prompts + [NEGATIVE_PROMPT]).replace(",", " ").split()
        with tempfile.TemporaryDirectory() as tmp:
            model = build_tiny(cfg.resolution, words, Path(tmp), params.seed, pre.width, pre.text_width).to(device)
        x, _ = to_device_tensors(data.x_train, data.y_train, device)
        vae_log = pretrain_vae(model.vae, x, steps=pre.vae_steps, batch_size=pre.batch_size, lr=pre.lr,
                               resolution=cfg.resolution, seed=params.seed, desc=f"{STAGE} vae")
        training = UnetTraining(steps=pre.unet_steps, batch_size=pre.batch_size, lr=pre.lr, resolution=cfg.resolution,
                                lora=None, snr_gamma=None, distribution="none", guidance="none", flip=cfg.flip,
                                weight_decay=1e-2, max_grad_norm=None)
        _, unet_log = train_unet(model, x, prompts, None, training, seed=params.seed, device=device,
                                 state_path=state_file(repo_root(), STAGE, params.flat()), state_every=200,
                                 log_every=max(1, pre.unet_steps // 10), desc=f"{STAGE} unet",
                                 on_log=lambda r: run.log_metrics({"unet_loss": r["loss"]}, step=r["step"]))
        save_base_model(model, paths.out, vision=paths.out / "image_encoder")
        atomic_write_csv(paths.reports / "vae_loss.csv", vae_log)
        atomic_write_csv(paths.reports / "unet_loss.csv", unet_log)
        metrics = {"vae_loss": vae_log[-1]["vae_loss"], "unet_loss": unet_log[-1]["loss"],
                   "latent_scaling_factor": model.vae.config.scaling_factor}
        run.log_metrics(metrics)
        print(f"{STAGE}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_main(main)
