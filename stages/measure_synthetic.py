"""Stage measure_synthetic@<n_base>: quality of the closed-set pool against the real test set.

Features are the reference classifier's (train_reference): Fréchet distance, diversity (real and synthetic)
and a real-vs-synthetic domain classifier's accuracy; with ``equivalence.quality.inception_weights`` also FID
and Inception Scores (torchmetrics over torch-fidelity's Inception-v3). Writes ``--out`` (``reports/equivalence/measure_synthetic/<n>.json``).
"""

from __future__ import annotations

import torch

from synthgap.equivalence.grid import load_pool
from synthgap.equivalence.quality import (
    check_inception_weights,
    diversity,
    domain_accuracy,
    extract_features,
    frechet_distance,
    inception_scores,
)
from synthgap.errors import run_main
from synthgap.models import check_compatible, load_classifier
from synthgap.paths import atomic_write_json, repo_root
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from stages.common import base_subset, equivalence_foreach_params

STAGE = "measure_synthetic"


def main() -> None:
    params, n_base, paths = equivalence_foreach_params(STAGE, "data", "reference", "pool", "out")
    device = resolve_device(params.device)
    quality = params.section.quality
    weights = quality.inception_weights and repo_root() / quality.inception_weights
    if weights:
        check_inception_weights(weights)  # before any compute
    with StageRun(params, experiment="equivalence") as run:
        data, _ = base_subset(paths.data, n_base, params.section.merge_train_val)
        classifier = load_classifier(paths.reference, device)
        check_compatible(classifier, data.num_classes, data.image_shape, data.name, paths.reference)
        x_syn, y_syn = load_pool(paths.pool, "npz", data.num_classes)
        as_tensor = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())  # noqa: E731
        real = extract_features(classifier, as_tensor(data.x_test))
        synthetic = extract_features(classifier, as_tensor(x_syn))
        metrics = {
            "frechet_distance": frechet_distance(real, synthetic),
            "diversity_real": diversity(real, data.y_test),
            "diversity_synthetic": diversity(synthetic, y_syn),
            "domain_accuracy": domain_accuracy(real, synthetic, params.seed),
        }
        if weights:
            metrics |= inception_scores(as_tensor(data.x_test), as_tensor(x_syn), weights, device,
                                        batch_size=quality.batch_size, seed=params.seed)
        atomic_write_json(paths.out, metrics | {"n_base": n_base, "n_synthetic": len(y_syn), "n_real": len(data.y_test)})
        run.log_metrics(metrics)
        print(f"{params.stage}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_main(main)
