"""Stage measure_synthetic: quality of the synthetic pools against the real test set.

The pools are the ones the augment@<n_base> stages draw from: the closed-set pool of each sample_diffusion@<n_base>
(``--pools``: its folder, ``<n_base>.npz`` per base size of ``equivalence.base_sizes``), named ``closed_<n_base>``,
and, unless ``equivalence.open_set.source`` is none, the one open-set pool every base size shares (``--sets``: the
Real-Fake stand-in's text-to-image set; or the user's), named ``open``. One stage for all pools: each takes under a
second, less than a stage's start-up. Features are the reference classifier's (train_reference): Fréchet
distance, diversity (real and synthetic) and the accuracy of a real-vs-synthetic domain classifier
(``equivalence.quality.domain_classifier``: logistic regression on those features, or the paper's classifier
on images); with ``equivalence.quality.inception_weights`` also FID and Inception Scores (torchmetrics over
torch-fidelity's Inception-v3). ``equivalence.quality.images`` sets how many synthetic images the metrics use
(the paper's FID and IS: 50,000; a larger pool is measured on a seeded random subset) and
``equivalence.quality.diversity_features`` the feature space of the diversity score. Writes ``--out``
(``reports/equivalence/measure_synthetic.json``: per pool its metrics and ``n_synthetic``, the number of
images they were computed on); MLflow metrics ``<pool>_<metric>``.
"""

from __future__ import annotations

import torch

from synthgap.equivalence.grid import synthetic_pools
from synthgap.equivalence.quality import (
    check_inception_weights,
    diversity,
    domain_accuracy,
    extract_features,
    frechet_distance,
    image_domain_accuracy,
    inception_scores,
    pool_sample,
)
from synthgap.errors import run_main
from synthgap.models import check_compatible, load_classifier
from synthgap.paths import atomic_write_json, item_path, repo_root
from synthgap.runtime import resolve_device
from synthgap.seeding import derive_seed
from synthgap.tracking import StageRun
from stages.common import base_subset, equivalence_params

STAGE = "measure_synthetic"


def main() -> None:
    params, paths = equivalence_params(STAGE, "data", "reference", "pools", "sets", "out")
    cfg = params.section
    device = resolve_device(params.device)
    quality = cfg.quality
    weights = quality.inception_weights and repo_root() / quality.inception_weights
    if weights:
        check_inception_weights(weights)  # before any compute
    with StageRun(params, experiment="equivalence") as run:
        data, _ = base_subset(paths.data, min(cfg.base_sizes), cfg.merge_train_val)  # the size checks of augment
        classifier = load_classifier(paths.reference, device)
        check_compatible(classifier, data.num_classes, data.image_shape, data.name, paths.reference)
        pools, found = {}, {}
        for n_base in cfg.base_sizes:
            found = synthetic_pools(cfg, item_path(paths.pools, n_base, ".npz"), paths.sets, data, repo_root())
            pools[f"closed_{n_base}"] = found.pop("closed")
        pools |= found  # the open pool, the same for every base size
        as_tensor = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())  # noqa: E731
        real = extract_features(classifier, as_tensor(data.x_test))
        diversity_real = diversity(real, data.y_test)
        if quality.domain_classifier == "images":
            domain_recipe = cfg.train_recipe(quality.domain_epochs)
        out = {"base_sizes": list(cfg.base_sizes), "n_real": len(data.y_test), "domain_classifier": quality.domain_classifier,
               "diversity_features": quality.diversity_features, "pools": {}}
        for name, (x_syn, y_syn) in pools.items():
            if quality.images and len(y_syn) < quality.images:
                print(f"{params.stage}: warning: the {name} pool has {len(y_syn):,} images, fewer than "
                      f"equivalence.quality.images {quality.images:,}; its metrics use all {len(y_syn):,}", flush=True)
            x_syn, y_syn = pool_sample(x_syn, y_syn, quality.images, derive_seed(params.seed, STAGE, name))
            synthetic = extract_features(classifier, as_tensor(x_syn))
            if quality.domain_classifier == "images":
                domain = image_domain_accuracy(as_tensor(data.x_test), as_tensor(x_syn), cfg.classifier.model,
                                               domain_recipe, seed=params.seed, device=device, dataset=data.name)
            else:
                domain = domain_accuracy(real, synthetic, params.seed)
            metrics = {
                "frechet_distance": frechet_distance(real, synthetic),
                "diversity_real": diversity_real,
                "diversity_synthetic": diversity(synthetic, y_syn),
                "domain_accuracy": domain,
            }
            if weights:  # with diversity_features: inception, its diversity_* replace the reference classifier's
                labels = (data.y_test, y_syn) if quality.diversity_features == "inception" else None
                metrics |= inception_scores(as_tensor(data.x_test), as_tensor(x_syn), weights, device,
                                            batch_size=quality.batch_size, seed=params.seed, labels=labels)
            out["pools"][name] = metrics | {"n_synthetic": len(y_syn)}
            run.log_metrics({f"{name}_{k}": v for k, v in metrics.items()})
            print(f"{params.stage} {name} ({len(y_syn):,} images): " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        atomic_write_json(paths.out, out)


if __name__ == "__main__":
    run_main(main)
