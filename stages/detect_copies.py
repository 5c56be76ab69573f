"""Stage detect_copies: does the synthetic set copy its training images? (Real-Fake Sec. 4.5, Fig. 4)

Features are SSCD's (a TorchScript file from the SSCD release, ``realfake.privacy.sscd_weights``) when given,
else the reference classifier's penultimate features, centred on the real training mean (they are
post-ReLU, so uncentred cosine similarities all sit near 1). For every ``full`` img2img image, the cosine
similarity of L2-normalised features to every real training image; as a yardstick, the same for the real
test images (held out, so never copies). Writes ``reports/realfake/detect_copies.{json,png}``: the similarity
quantiles of both and the queries with the closest matches next to their top 3 real images.
"""

from __future__ import annotations

import numpy as np
import torch

from synthgap.data import load_processed
from synthgap.data.formats import read_npz
from synthgap.equivalence.quality import extract_features
from synthgap.errors import UserError, run_main
from synthgap.models import check_compatible, load_classifier
from synthgap.paths import atomic_write_json, repo_root
from synthgap.realfake.pipeline import set_path
from synthgap.realfake.privacy import nearest_real
from synthgap.realfake.report import matches_figure
from synthgap.runtime import resolve_device
from synthgap.tracking import StageRun
from stages.common import realfake_params

STAGE = "detect_copies"


def sscd_features(path, x_uint8: torch.Tensor, device) -> np.ndarray:
    """SSCD descriptors (ImageNet normalisation, 288 px short side as in its README)."""
    from torch.nn import functional as F

    if not path.is_file():
        raise UserError(f"realfake.privacy.sscd_weights: {path} not found",
                        "download sscd_disc_mixup.torchscript.pt from the SSCD release there, or set it to null")
    model = torch.jit.load(str(path), map_location=device).eval()
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for i in range(0, len(x_uint8), 64):
            x = x_uint8[i : i + 64].to(device).float().div(255)
            x = F.interpolate(x.expand(-1, 3, -1, -1), size=(288, 288), mode="bicubic").clamp(0, 1)
            out.append(model((x - mean) / std).float().cpu())
    return torch.cat(out).numpy()


def main() -> None:
    params, paths = realfake_params(STAGE, "data", "sets", "reference", "out")
    cfg = params.section
    device = resolve_device(params.device)
    with StageRun(params, experiment="realfake") as run:
        data = load_processed(paths.data)
        n = len(data.y_train)
        synthetic = read_npz(set_path(paths.sets, "full", "img2img"), ("x_train",))["x_train"][:n]
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
        if cfg.privacy.sscd_weights:
            features = lambda a: sscd_features(repo_root() / cfg.privacy.sscd_weights, as_tensor(a), device)  # noqa: E731
            source = "sscd"
        else:
            classifier = load_classifier(paths.reference, device)
            check_compatible(classifier, data.num_classes, data.image_shape, data.name, paths.reference)
            features = lambda a: extract_features(classifier, as_tensor(a))  # noqa: E731
            source = "reference classifier"
        real = torch.from_numpy(features(data.x_train))
        centre = real.mean(0) if source != "sscd" else torch.zeros(real.shape[1], dtype=real.dtype)
        sims, idx = nearest_real(torch.from_numpy(features(synthetic)) - centre, real - centre, top=5)
        test_sims, _ = nearest_real(torch.from_numpy(features(data.x_test)) - centre, real - centre, top=1)
        quantiles = (0.5, 0.9, 0.99, 1.0)
        metrics = {f"synthetic_top1_sim_q{q:g}": float(np.quantile(sims[:, 0].numpy(), q)) for q in quantiles}
        metrics |= {f"test_top1_sim_q{q:g}": float(np.quantile(test_sims[:, 0].numpy(), q)) for q in quantiles}
        metrics["synthetic_above_test_max"] = float((sims[:, 0] > test_sims[:, 0].max()).float().mean() * 100)
        reports = paths.out
        worst = torch.argsort(sims[:, 0], descending=True)[:6].numpy()
        matches_figure(synthetic[worst], data.x_train[idx[worst, :3].numpy()], sims[worst, :3].numpy(),
                       reports / f"{STAGE}.png")
        atomic_write_json(reports / f"{STAGE}.json", {"features": source, **metrics})
        run.log_metrics(metrics)
        run.log_artifact(reports / f"{STAGE}.png")
        print(f"{STAGE} ({source}): median top-1 similarity synthetic {metrics['synthetic_top1_sim_q0.5']:.3f}, "
              f"real test {metrics['test_top1_sim_q0.5']:.3f}; {metrics['synthetic_above_test_max']:.1f} % of "
              "synthetic images closer to a training image than any real test image is")


if __name__ == "__main__":
    run_main(main)
