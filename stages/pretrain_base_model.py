"""Stage pretrain_base_model: the tiny Stable Diffusion stand-in, pretrained as SD was, on a "web" corpus.

A stand-in for a web-scale model, not one: SD's own classes (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel + tokenizer, CLIPVisionModelWithProjection) from small configs, trained in SD's order on a corpus
that is not the data LoRA later finetunes on (``realfake.pretrain.corpus``; default: digits rendered from
matplotlib's fonts with varied captions, :mod:`synthgap.data.fonts`): the CLIP text and vision towers
contrastively (:mod:`synthgap.realfake.clip`), the VAE to reconstruct the corpus, then the UNet as a
text-conditioned latent diffusion model with the caption dropped 10 % of the time. The domain gap to the real
training digits is measured on the way: CLIP's zero-shot accuracy and the VAE's reconstruction error on the
corpus and on the real digits. Writes ``--out`` (``models/pretrain_base_model/``) in the diffusers layout (vision
model in ``image_encoder/``), read by the later Real-Fake stages when ``realfake.base_model`` is null (when it is
set, only a note saying so), and ``--reports``: the loss logs, a corpus preview and caption samples.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.paths import atomic_write_csv, atomic_write_text, repo_root
from synthgap.plots import class_columns, sample_grid
from synthgap.realfake.base_model import build_tiny, save_base_model
from synthgap.realfake.clip import pretrain_clip, zero_shot_accuracy
from synthgap.realfake.finetune import UnetTraining, pretrain_vae, train_unet, vae_error
from synthgap.realfake.pipeline import class_words, pretrain_corpus, prompts_for
from synthgap.realfake.synthesis import NEGATIVE_PROMPT, class_prompt
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
        corpus = pretrain_corpus(cfg, data, repo_root(), params.seed)
        prompts = prompts_for(cfg, data, repo_root())  # LoRA's prompts: their words are in the tokenizer too
        words = " ".join(corpus.captions + prompts + [NEGATIVE_PROMPT]).replace(",", " ").split()
        with tempfile.TemporaryDirectory() as tmp:
            model = build_tiny(cfg.resolution, words, Path(tmp), params.seed, pre.width, pre.text_width).to(device)
        web, web_labels = to_device_tensors(corpus.x, corpus.y, device)
        real, real_labels = to_device_tensors(data.x_train, data.y_train, device)
        metrics = {"corpus_images": len(corpus.y)}

        if pre.clip_steps:
            text_projection, clip_log = pretrain_clip(model, web, corpus.captions, steps=pre.clip_steps,
                                                      batch_size=pre.clip_batch_size, lr=pre.lr, seed=params.seed,
                                                      desc=f"{STAGE} clip")
            class_prompts = [class_prompt(name, None, cfg.prompt_template) for name in class_words(cfg, data)]
            metrics |= {"clip_loss": clip_log[-1]["clip_loss"],
                        "clip_zero_shot_corpus": zero_shot_accuracy(model, text_projection, web, web_labels, class_prompts),
                        "clip_zero_shot_real": zero_shot_accuracy(model, text_projection, real, real_labels, class_prompts)}
            atomic_write_csv(paths.reports / "clip_loss.csv", clip_log)

        vae_log = pretrain_vae(model.vae, web, steps=pre.vae_steps, batch_size=pre.batch_size, lr=pre.lr,
                               resolution=cfg.resolution, seed=params.seed, desc=f"{STAGE} vae")
        metrics |= {"vae_loss": vae_log[-1]["vae_loss"], "vae_error_corpus": vae_error(model.vae, web, cfg.resolution),
                    "vae_error_real": vae_error(model.vae, real, cfg.resolution),
                    "latent_scaling_factor": model.vae.config.scaling_factor}

        training = UnetTraining(steps=pre.unet_steps, batch_size=pre.batch_size, lr=pre.lr, resolution=cfg.resolution,
                                lora=None, snr_gamma=None, distribution="none", guidance="none", flip=cfg.flip,
                                caption_dropout=pre.caption_dropout, weight_decay=1e-2, max_grad_norm=None)
        _, unet_log = train_unet(model, web, corpus.captions, None, training, seed=params.seed, device=device,
                                 state_path=state_file(repo_root(), STAGE, params.flat()), state_every=200,
                                 log_every=max(1, pre.unet_steps // 10), desc=f"{STAGE} unet",
                                 on_log=lambda r: run.log_metrics({"unet_loss": r["loss"]}, step=r["step"]))
        metrics["unet_loss"] = unet_log[-1]["loss"]

        save_base_model(model, paths.out, vision=paths.out / "image_encoder")
        atomic_write_csv(paths.reports / "vae_loss.csv", vae_log)
        atomic_write_csv(paths.reports / "unet_loss.csv", unet_log)
        atomic_write_csv(paths.reports / "corpus_captions.csv",
                         [{"image": i, "digit": int(corpus.y[i]), "face": corpus.faces[i], "caption": corpus.captions[i]}
                          for i in range(min(100, len(corpus.y)))])
        sample_grid(web[class_columns(corpus.y, data.num_classes)], data.num_classes, paths.reports / "corpus.png",
                    f"{STAGE}: the pretraining corpus ({cfg.pretrain.corpus}); one column per class")
        run.log_metrics(metrics)
        run.log_artifact(paths.reports / "corpus.png")
        print(f"{STAGE}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_main(main)
