"""Stage train_generator@<seed>: one class-conditional BigGAN-deep per entry of gafi.generator_seeds.

Writes the EMA generator every ``gafi.gan.checkpoint_every`` epochs to ``--out`` (``epoch_XXXX.pt``, in
``models/train_generator/<seed>``), its history (CSV, ``--history``) and one row of samples per class
(``--preview``). Killed runs resume from ``.synthgap/state/`` when rerun. With
``gafi.gan.merge_train_val`` the GAN trains on the train and validation splits together, as the official code.
"""

from __future__ import annotations

import torch

from synthgap.distributed import is_main
from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.gafi.sampling import candidate_seeds, generate
from synthgap.models.biggan import GanSpec
from synthgap.paths import atomic_write_csv, repo_root
from synthgap.plots import sample_grid
from synthgap.runtime import resolve_device
from synthgap.staging import write_through
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from synthgap.train.state import state_file
from synthgap.train.gan import list_checkpoints, load_generator, train_gan
from stages.common import gafi_foreach_params


def main() -> None:
    params, gseed, paths = gafi_foreach_params("train_generator", "data", "out", "history", "preview")
    stage = params.stage
    cfg, device = params.section.gan, resolve_device(params.device)
    with StageRun(params, experiment="gafi") as run:
        data = load_processed(paths.data)
        h, _, c = data.image_shape
        arch = cfg.model_dump(include={"z_dim", "shared_dim", "g_width", "d_width", "depth", "attention_resolution", "blocks"})
        spec = GanSpec(data.num_classes, h, c, **arch, dataset=data.name)
        identity = {"gan": cfg.model_dump(), "data": params.data.model_dump(), "generator_seed": gseed}
        out, state = paths.out, state_file(repo_root(), stage, identity)
        write_through(out)  # epoch snapshots are kept when a run fails: a rerun resumes after the last one
        if not state.exists() and is_main():  # a fresh start: drop checkpoints of an earlier, different run
            for old in list_checkpoints(out).values():
                old.unlink(missing_ok=True)
        if cfg.merge_train_val:  # the official code's GAN sees the validation images too
            data = data.with_val_in_train()
        x, y = to_device_tensors(data.x_train, data.y_train, device)
        history = train_gan(spec, x, y, cfg, seed=gseed, device=device, out_dir=out,
                            state_path=state, desc=stage, on_epoch=lambda r: run.log_metrics(r, step=r["epoch"]))
        atomic_write_csv(paths.history, history)
        last = max(list_checkpoints(out))
        generator = load_generator(list_checkpoints(out)[last], device)
        labels = torch.arange(data.num_classes).repeat_interleave(8)
        images = generate(generator, labels, candidate_seeds(0, 0, 0, len(labels), "preview"), 1.0)
        sample_grid(images, 8, paths.preview, f"{stage}: EMA generator, epoch {last}, one row per class")
        final = {k: history[-1][k] for k in ("d_loss", "g_loss", "g_steps", "d_steps")}
        run.log_metrics(final | {"checkpoints": len(list_checkpoints(out))})
        run.log_metrics({"train_seconds": sum(r["seconds"] for r in history)}, timing=True)
        run.log_artifact(paths.preview)


if __name__ == "__main__":
    run_main(main)
