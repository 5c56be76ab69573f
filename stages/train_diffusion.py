"""Stage train_diffusion@<n_base>: the closed-set generator, an EDM model trained only on the base subset.

With EDM's recipe as ``equivalence.diffusion`` sets it (:class:`synthgap.config.DiffusionConfig`): the
augmentation pipe with augment labels, the EMA half-life with ramp-up, the lr ramp, a duration in images.

Writes the EMA denoiser + settings to ``--out`` (``models/train_diffusion/<n>.pt``) and the loss log to
``--history`` (``reports/equivalence/train_diffusion/<n>.csv``). Killed runs resume from ``.synthgap/state/``.
"""

from __future__ import annotations

from synthgap.errors import run_main
from synthgap.diffusion.augment import AUGMENT_DIM, AugmentPipe
from synthgap.models.unet import UNetSpec
from synthgap.paths import atomic_write_csv, repo_root
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from synthgap.train.state import state_file
from synthgap.train.diffusion import save_denoiser, train_diffusion
from stages.common import base_subset, equivalence_foreach_params

STAGE = "train_diffusion"


def main() -> None:
    params, n_base, paths = equivalence_foreach_params(STAGE, "data", "out", "history")
    cfg = params.section.diffusion
    device = resolve_device(params.device)
    with StageRun(params, experiment="equivalence") as run:
        data, idx = base_subset(paths.data, n_base, params.section.merge_train_val)
        h, _, c = data.image_shape
        arch = cfg.model_dump(include={"width", "channel_mult", "blocks", "attention_resolution", "dropout", "layout"})
        augment = AugmentPipe(cfg.augment_p, cfg.augment_xflip) if cfg.augment_p > 0 else None
        spec = UNetSpec(data.num_classes, h, c, **arch, augment_dim=AUGMENT_DIM if augment else 0, dataset=data.name)
        x, y = to_device_tensors(data.x_train[idx], data.y_train[idx], device)
        steps = cfg.total_steps(min(cfg.batch_size, len(y)))
        identity = {"diffusion": cfg.model_dump(), "data": params.data.model_dump(), "n_base": n_base, "seed": params.seed}
        denoiser, history = train_diffusion(
            spec, x, y, steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay,
            seed=params.seed, device=device, state_every=cfg.state_every, log_every=max(1, steps // 20),
            state_path=state_file(repo_root(), params.stage, identity), desc=params.stage,
            on_log=lambda r: run.log_metrics({"loss": r["loss"]}, step=r["step"]),
            ema_halflife_kimg=cfg.ema_halflife_kimg, ema_rampup_ratio=cfg.ema_rampup_ratio,
            lr_rampup_kimg=cfg.lr_rampup_kimg, augment=augment,
        )
        save_denoiser(denoiser, paths.out, steps)
        atomic_write_csv(paths.history, history)
        run.log_metrics({"final_loss": history[-1]["loss"], "n_base": n_base})
        run.log_metrics({"train_seconds": sum(r["seconds"] for r in history)}, timing=True)


if __name__ == "__main__":
    run_main(main)
