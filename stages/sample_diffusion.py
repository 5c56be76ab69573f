"""Stage sample_diffusion@<n_base>: a class-balanced synthetic pool from the base subset's EDM model.

The pool holds the base's largest closed-set ratio (``equivalence.syn_ratios``, or its entry in
``ratios_by_base``) x n_base images, or ``equivalence.quality.images`` if that is more (the images
measure_synthetic's FID and IS use), labels interleaved so that every prefix is class-balanced, each from its
own seed (deterministic Heun, ``equivalence.diffusion.sampler_steps`` steps).
Writes ``--out`` (``data/synthetic/sample_diffusion/<n>.npz``: images, labels, seeds, class names, and ``seconds``: the
wall seconds the sampling took, the generation cost compare_generators reports) and a preview.
"""

from __future__ import annotations

import time

import torch

from synthgap.data import load_processed
from synthgap.diffusion.edm import sample_set
from synthgap.errors import run_main
from synthgap.gafi.sampling import save_synthetic
from synthgap.noise import image_seeds
from synthgap.plots import sample_grid
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from synthgap.train.diffusion import load_denoiser
from stages.common import equivalence_foreach_params

STAGE = "sample_diffusion"


def main() -> None:
    params, n_base, paths = equivalence_foreach_params(STAGE, "data", "model", "out", "preview")
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="equivalence") as run:
        data = load_processed(paths.data)
        denoiser = load_denoiser(paths.model, device)
        count = max(round(max(cfg.ratios(n_base, "closed")) * n_base), cfg.quality.images or 0)
        labels = torch.arange(count, device=device) % data.num_classes
        seeds = image_seeds(params.seed, torch.arange(count), STAGE, n_base)
        h, _, c = data.image_shape
        start = time.perf_counter()
        images = sample_set(denoiser, labels, seeds, (c, h, h), steps=cfg.diffusion.sampler_steps)
        seconds = time.perf_counter() - start
        save_synthetic(paths.out, images, labels, data.classes, seeds, seconds=seconds)
        sample_grid(images[: 8 * data.num_classes], data.num_classes, paths.preview, f"{params.stage}: one column per class")
        run.log_metrics({"pool_size": count, "seconds_per_1000": 1000 * seconds / count})
        run.log_artifact(paths.preview)


if __name__ == "__main__":
    run_main(main)
