"""Stage synthesize_realfake: the synthetic training sets of the Real-Fake tables.

For every variant of ``realfake.ablation`` (``base``: no adapter) and both modes, ``img2img`` (latent prior:
from each real training image) and ``txt2img``, one image per training image with that image's prompt and
guidance token, once per trial; the ``full`` img2img set has ``max(realfake.scales)`` copies per trial (copy c of
image i has its own seed), so Table 3's x k is the first k copies of a trial's block (:func:`trial_block`). The
seed of copy c of image i in trial t is the same in every variant and mode (:func:`set_seeds`): paired sets.
Writes ``<--out>/<variant>_<mode>.npz`` (``data/synthetic/synthesize_realfake/``) (``x_train``, ``y_train``, ``seeds``,
``source_index``, and ``seconds``: a 0-d float64 array, the wall seconds that set's synthesis took, for the cost
per 1,000 images) and a preview per set; the MLflow run logs ``<variant>_<mode>_images`` and
``<variant>_<mode>_seconds_per_1000`` (wall seconds per 1,000 images) per set.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.gafi.sampling import save_synthetic
from synthgap.paths import repo_root
from synthgap.plots import class_columns, sample_grid
from synthgap.realfake.finetune import load_adapter
from synthgap.realfake.guidance import guidance_embeddings, image_embeddings
from synthgap.realfake.pipeline import (adapter_path, copies_per_trial, load_model, prompts_for, set_path, set_seeds,
                                       synthesis_spec)
from synthgap.realfake.synthesis import synthesize
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from stages.common import realfake_params

STAGE = "synthesize_realfake"


def main() -> None:
    params, paths = realfake_params(STAGE, "data", "stand-in", "adapters", "out", "previews")
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="realfake") as run:
        data = load_processed(paths.data)
        h, _, c = data.image_shape
        n = len(data.y_train)
        prompts = prompts_for(cfg, data, repo_root())
        x, y = to_device_tensors(data.x_train, data.y_train, device)
        embeddings = None  # the vision tower is the base model's in every variant: embed the images once
        for variant in cfg.ablation:
            model = load_model(cfg, paths.stand_in, repo_root(), device)
            if embeddings is None:
                embeddings = image_embeddings(model.image_encoder, x)
            projection, settings = (None, {"guidance": "none"})
            if variant != "base":
                projection, settings = load_adapter(adapter_path(paths.adapters, variant), model, device)
            tokens = guidance_embeddings(embeddings, y, settings["guidance"])
            for mode in ("img2img", "txt2img"):
                copies = params.trials * copies_per_trial(cfg, variant, mode)
                source = np.tile(np.arange(n), copies)
                # paired across variants and modes: (trial, copy, image) alone names an image's seed
                seeds = set_seeds(params.seed, n, params.trials, copies_per_trial(cfg, variant, mode), STAGE)
                start = time.perf_counter()
                images = synthesize(
                    model, synthesis_spec(cfg, mode, lora=variant != "base"), [prompts[i] for i in source], seeds,
                    sources=x[source] if mode == "img2img" else None,
                    tokens=tokens[source] if tokens is not None else None, projection=projection,
                    out_channels=c, out_size=h, desc=f"{STAGE} {variant} {mode}",
                )
                seconds = time.perf_counter() - start
                labels = torch.from_numpy(data.y_train[source])
                path = set_path(paths.out, variant, mode)
                save_synthetic(path, images, labels, data.classes, torch.tensor(seeds), source_index=source,
                               seconds=np.float64(seconds))
                preview = paths.previews / f"{variant}_{mode}.png"
                sample_grid(images[class_columns(labels[:n], data.num_classes)], data.num_classes, preview,
                            f"{STAGE}: {variant}, {mode}; one column per class")
                run.log_metrics({f"{variant}_{mode}_images": len(images),
                                 f"{variant}_{mode}_seconds_per_1000": 1000 * seconds / max(len(images), 1)})
                print(f"{STAGE}: {variant} {mode}: {len(images)} images in {seconds:.1f} s")


if __name__ == "__main__":
    run_main(main)
