"""Stage finetune_lora: one LoRA adapter per finetuned variant of ``realfake.ablation``.

``plain`` (diffusion loss), ``guidance`` (+ visual guidance), ``matching`` (+ distribution matching), ``full``
(both); see ``synthgap.realfake.pipeline``. Each trains on the whole train split and writes only its adapter
(LoRA weights, guidance projection, settings) to ``<--out>/<variant>/adapter.pt`` (``models/finetune_lora/``), the LoRA weights
again as diffusers saves them (``pytorch_lora_weights.safetensors``, for ``StableDiffusionPipeline.load_lora_weights``)
and its loss log to ``<--reports>/<variant>.csv``.
Killed runs resume from ``.synthgap/state/``: the variant in progress from its last state, and a variant that
had finished is loaded from its state file (kept, with the final weights and loss log, until the whole stage
has succeeded: ``synthgap.staging.remove_after_commit``) instead of being trained again.
"""

from __future__ import annotations

from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.paths import atomic_write_csv, repo_root
from synthgap.realfake.finetune import export_diffusers_lora, save_adapter, train_unet
from synthgap.realfake.guidance import guidance_embeddings, image_embeddings
from synthgap.realfake.pipeline import adapter_path, finetune_settings, load_model, prompts_for
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from synthgap.train.state import state_file
from stages.common import realfake_params

STAGE = "finetune_lora"


def main() -> None:
    params, paths = realfake_params(STAGE, "data", "stand-in", "out", "reports")
    cfg = params.section
    device = resolve_device(params.device)
    variants = [v for v in cfg.ablation if v != "base"]
    states = {v: state_file(repo_root(), f"{STAGE}-{v}", params.flat()) for v in variants}
    with StageRun(params, experiment="realfake") as run:
        data = load_processed(paths.data)
        prompts = prompts_for(cfg, data, repo_root())
        x, y = to_device_tensors(data.x_train, data.y_train, device)
        embeddings = None
        for variant in variants:
            model = load_model(cfg, paths.stand_in, repo_root(), device)
            if embeddings is None:
                embeddings = image_embeddings(model.image_encoder, x)
            settings = finetune_settings(cfg, variant, device=device)
            tokens = guidance_embeddings(embeddings, y, settings.guidance)
            with run.child(f"{STAGE}/variant={variant}", {"variant": variant, "guidance": settings.guidance,
                                     "distribution": settings.distribution}) as child:
                projection, log = train_unet(
                    model, x, prompts, tokens, settings, seed=params.seed, device=device,
                    state_path=states[variant],
                    state_every=cfg.finetune.state_every, log_every=max(1, settings.steps // 10),
                    desc=f"{STAGE} {variant}",
                    on_log=lambda r, c=child: c.log_metrics({"loss": r["loss"]}, step=r["step"]),
                )
                save_adapter(adapter_path(paths.out, variant), model.unet, settings.lora, projection,
                             {"variant": variant, "guidance": settings.guidance, "distribution": settings.distribution})
                export_diffusers_lora(adapter_path(paths.out, variant).parent, model.unet)  # for load_lora_weights
                atomic_write_csv(paths.reports / f"{variant}.csv", log)
                child.log_metrics({"final_loss": log[-1]["loss"]})
                print(f"{STAGE}: {variant} final loss {log[-1]['loss']:.4f}")
        run.log_metrics({"variants": len(variants)})


if __name__ == "__main__":
    run_main(main)
