"""Generator quality for GaFi: FID / IS / KID (:func:`synthgap.equivalence.quality.generator_quality`) of chosen
generator checkpoints against the real test split.

Each checkpoint is measured twice: ``raw`` (stddev 1, unfiltered: the checkpoint itself) and ``gafi`` (its
chosen stddev and threshold: the set the CAS classifier trains on). Without Inception weights the feature space
is the filter classifier's, which also did the filtering: filtered sets look better to it than they are.
"""

from __future__ import annotations

import torch

from synthgap.equivalence.quality import generator_quality
from synthgap.gafi.filtering import filtered_sample
from synthgap.gafi.sampling import balanced_counts
from synthgap.seeding import derive_seed
from synthgap.train.classifier import to_device_tensors


def measure_generators(ctx, members, weights=None) -> list[dict]:
    """One row per (member, variant) for ``members`` (:class:`synthgap.gafi.pipeline.Member`) of the context
    ``ctx`` (:class:`synthgap.gafi.pipeline.GafiContext`), with ``gafi.quality.images`` images each."""
    cfg = ctx.cfg.quality
    # standard NCHW strides: for one channel, to_device_tensors's strides also read as channels_last, which moves
    # the convolutions' rounding (FID/KID in the 7th digit)
    x_test = to_device_tensors(ctx.data.x_test, ctx.data.y_test, "cpu")[0].clone(memory_format=torch.contiguous_format)
    order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(derive_seed(ctx.seed, "quality", "real")))
    real = x_test[order[: min(cfg.images, len(x_test))]]
    quota = balanced_counts(cfg.images, ctx.data.num_classes)
    rows = []
    for m in members:
        variants = {"raw": (1.0, None), "gafi": (m.stddev, m.threshold)}
        for variant, (stddev, threshold) in variants.items():
            if variant == "gafi" and variants["gafi"] == variants["raw"]:
                continue
            x, _, _ = filtered_sample(ctx.generator(m.generator_seed, m.checkpoint), ctx.filter, quota, stddev, threshold,
                                      base_seed=derive_seed(ctx.seed, "quality"), key=("generator", m.generator_seed),
                                      max_rounds=ctx.cfg.filter_rounds, batch_size=ctx.cfg.filter_batch_size)
            scores = generator_quality(real, x.cpu(), ctx.filter, weights=weights, device=ctx.device,
                                       batch_size=cfg.batch_size, seed=ctx.seed)
            rows.append({"generator_seed": m.generator_seed, "checkpoint": m.checkpoint, "variant": variant,
                         "stddev": stddev, "threshold": "none" if threshold is None else threshold,
                         "n_real": len(real), "n_synthetic": len(x), **scores})
    return rows
