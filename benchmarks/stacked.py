"""k classifiers trained together (one stacked network) against the same k trained one after another.

    python -m benchmarks.stacked [--device cpu|cuda] [--k 5] [--quick]

Two shapes: the embedded default's CAS classifier (ResNet-20 width 8, 8x8 grey digits, 1,047 images, batch
64) and GaFi's (ResNet-20 width 64, 32x32 RGB, batch 128). For each, the same k models with their own seeds
and data are trained for two timed epochs (after an untimed warm-up of both loops on two batches, which builds
the kernels a process builds once) by ``train_classifiers`` (stacked) and by k ``train_classifier`` calls
(sequential, the baseline); the ratio is sequential seconds / stacked
seconds; the embedded shape is measured at k and at k = 16, the group size the embedded default trains
(``train.stack``). Both loops run in this process on the same inputs; images are random uint8 (speed does not depend
on content). Goal on the CPU: >= 3x for k = 5 at the embedded size.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import pick_device, report, timed
from synthgap.config import TrainConfig
from synthgap.models import ClassifierSpec, build_classifier
from synthgap.train.classifier import train_classifier, train_classifiers

SHAPES = {  # name -> (width, channels, size, images, batch)
    "embedded_w8_8px": (8, 1, 8, 1047, 64),
    "gafi_w64_32px": (64, 3, 32, 50_000, 128),
}


def models(k: int, width: int, channels: int, size: int, device) -> list[torch.nn.Module]:
    out = []
    for j in range(k):
        torch.manual_seed(j)
        spec = ClassifierSpec("resnet20", 10, channels, size, width=width, mean=(0.5,) * channels, std=(0.25,) * channels)
        out.append(build_classifier(spec).to(device))
    return out


def measure(name: str, k: int, device: torch.device, images: int | None) -> dict:
    width, channels, size, n, batch = SHAPES[name]
    n = images or n
    gen = torch.Generator().manual_seed(0)
    sets = [(torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8).to(device),
             torch.randint(0, 10, (n,), generator=gen).to(device)) for _ in range(k)]
    cfg = TrainConfig(epochs=2, batch_size=batch, lr=0.05, milestones=(1,), crop_padding=1 if size == 8 else 4,
                      flip=size != 8, precision="auto", stack=k)
    warm = [(x[: 2 * batch], y[: 2 * batch]) for x, y in sets]  # first calls build kernels: untimed, both loops
    warm_cfg = cfg.model_copy(update={"epochs": 1, "milestones": ()})
    train_classifiers(models(k, width, channels, size, device), warm, warm_cfg, seeds=list(range(k)), device=device, desc="warm-up")
    train_classifier(models(1, width, channels, size, device)[0], warm[0], warm_cfg, seed=0, device=device, desc="warm-up")
    stacked = timed(lambda: train_classifiers(models(k, width, channels, size, device), sets, cfg, seeds=list(range(k)),
                                              device=device, desc="stacked"), device)
    ms = models(k, width, channels, size, device)
    sequential = timed(lambda: [train_classifier(m, s, cfg, seed=j, device=device, desc="sequential")
                                for j, (m, s) in enumerate(zip(ms, sets))], device)
    return {"k": k, "images": n, "batch_size": batch, "epochs": cfg.epochs, "stacked_s": round(stacked, 2),
            "sequential_s": round(sequential, 2), "ratio": round(sequential / stacked, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stacked", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI: checks that it runs, not speed")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    shapes = {"embedded_w8_8px": measure("embedded_w8_8px", 2 if args.quick else args.k, device, 256 if args.quick else None)}
    if not args.quick:  # the embedded default's own group size (train.stack: 16), where stacking pays most
        shapes["embedded_w8_8px_k16"] = measure("embedded_w8_8px", 16, device, None)
        big = 512 if device.type == "cpu" else None  # a CPU takes minutes per 50k-image epoch of w64
        shapes["gafi_w64_32px"] = measure("gafi_w64_32px", args.k, device, big)
    report("stacked", device, {"benchmark": "stacked", "shapes": shapes, "goal": ">= 3x for k = 5 at embedded_w8_8px on the CPU"},
           save=not args.no_save and not args.quick)


if __name__ == "__main__":
    main()
