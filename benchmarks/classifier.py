"""Training throughput of the ResNet-20 classifier loop on 32x32 images: ours against a reference-style baseline.

    python -m benchmarks.classifier [--device cpu|cuda] [--width 64] [--quick] [--compile]
    python -m benchmarks.classifier --device cuda --cifar10 PATH   # also the 100-epoch real-data run

ours      ``synthgap.train.classifier.train_classifier`` as the stages call it with ``precision: bf16``: uint8
          images resident on the device, batched crop/flip on the device, channels_last and bf16 autocast
          (AMX on recent Xeons, tensor cores on GPUs), fused/foreach SGD, no per-step host synchronisation;
          timed over its second epoch (the first warms up). ``ours_fp32`` is the same loop with
          ``precision: fp32`` (the CPU default ``auto``), for the strict-numerics comparison.
baseline  how reference implementations train CIFAR ResNets: a torchvision ``Dataset`` of PIL images with
          per-sample ``RandomCrop(32, padding=4)`` / ``RandomHorizontalFlip`` / ``ToTensor``, a ``DataLoader``
          with 2 workers, fp32, ``loss.item()`` and accuracy read back every step.
Both train the same model at the same batch size in the same process; images are random uint8 (throughput
does not depend on content). With ``--cifar10`` the paper's recipe (GaFi: ResNet-20 w64, 100 epochs, SGD
0.1, Nesterov, wd 5e-4, milestones 50/75, batch 128) also trains on the real CIFAR-10 train split and
reports wall seconds and test accuracy (paper: 94.98 %).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks.common import (
    CIFAR_MEAN,
    CIFAR_STD,
    count_flops,
    measured_peak_flops,
    pick_device,
    profile_summary,
    report,
    sync,
    timed,
)
from synthgap.config import TrainConfig
from synthgap.models import ClassifierSpec, build_classifier
from synthgap.train.classifier import train_classifier

def make_model(width: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(ClassifierSpec("resnet20", 10, 3, 32, width=width, mean=CIFAR_MEAN, std=CIFAR_STD)).to(device)


def ours(width: int, x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device, precision: str,
         compile_model: bool = False) -> float:
    """Images per second of our loop's second epoch over ``x`` (``compile_model``: under ``torch.compile``,
    whose compilation happens in the untimed first epoch)."""
    cfg = TrainConfig(epochs=2, batch_size=batch_size, lr=0.1, milestones=(1,), precision=precision)
    model = make_model(width, device)
    model = torch.compile(model) if compile_model else model
    result = train_classifier(model, (x.to(device), y.to(device)), cfg, seed=0, device=device, desc="ours")
    return len(y) / result.history[1]["seconds"]


class PilDataset(torch.utils.data.Dataset):
    """A CIFAR10-style dataset: HWC uint8 arrays, each item a PIL image through the transform."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def baseline(width: int, x: np.ndarray, y: np.ndarray, batch_size: int, device: torch.device, warmup: int) -> float:
    """Images per second of the reference-style loop, timed after ``warmup`` steps."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(PilDataset(x, y, transform), batch_size=batch_size, shuffle=True,
                                         num_workers=2, drop_last=True, pin_memory=device.type == "cuda")
    model = make_model(width, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    seen, total_loss, correct = 0, 0.0, 0
    t0 = None
    for step, (xb, yb) in enumerate(loader):
        if step == warmup:
            sync(device)
            t0, seen = time.perf_counter(), 0
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total_loss += loss.item()
        correct += out.argmax(1).eq(yb).sum().item()
        seen += len(yb)
    sync(device)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="a few steps per side (under a minute on a CPU)")
    ap.add_argument("--compile", action="store_true", help="also time the loop under torch.compile")
    ap.add_argument("--cifar10", help="CIFAR-10 folder (python batches, or an ImageFolder with train/ and test/): "
                    "also run the 100-epoch real-data recipe")
    ap.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results")
    args = ap.parse_args()
    device = pick_device(args.device)
    if device.type == "cuda":
        steps, warmup = (40, 10) if args.quick else (390, 30)
    else:
        steps, warmup = (4, 2) if args.quick else (40, 5)
    n = (steps + warmup) * args.batch_size
    rng = np.random.default_rng(0)
    x_np = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y_np = rng.integers(0, 10, n)
    x = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(y_np)

    ours_ips = ours(args.width, x[: steps * args.batch_size], y[: steps * args.batch_size], args.batch_size, device, "bf16")
    ours_fp32 = ours(args.width, x[: steps * args.batch_size], y[: steps * args.batch_size], args.batch_size, device, "fp32")
    base_ips = baseline(args.width, x_np, y_np, args.batch_size, device, warmup)

    model = make_model(args.width, device)
    xb = x[: args.batch_size].to(device).float() / 255

    def train_step():
        F.cross_entropy(model(xb), y[: args.batch_size].to(device)).backward()

    flops_per_image = count_flops(train_step) / args.batch_size
    peak = measured_peak_flops(device, torch.bfloat16)
    peak_fp32 = measured_peak_flops(device, torch.float32)
    result = {
        "benchmark": "classifier",
        "model": f"resnet20 w{args.width}",
        "batch_size": args.batch_size,
        "timed_steps": steps,
        "ours_img_per_s": round(ours_ips, 1),
        "ours_fp32_img_per_s": round(ours_fp32, 1),
        "baseline_img_per_s": round(base_ips, 1),
        "ratio": round(ours_ips / base_ips, 2),
        "ratio_fp32": round(ours_fp32 / base_ips, 2),
        "projected_s_100_epochs_50k": {"ours": round(100 * 50_000 / ours_ips, 1),
                                        "baseline": round(100 * 50_000 / base_ips, 1)},
        "train_gflop_per_image": round(flops_per_image / 1e9, 3),
        "peak_matmul_tflops": {"bf16": round(peak / 1e12, 2), "fp32": round(peak_fp32 / 1e12, 2)},
        "fraction_of_peak": {"ours_bf16": round(ours_ips * flops_per_image / peak, 3),
                             "ours_fp32": round(ours_fp32 * flops_per_image / peak_fp32, 3),
                             "baseline_fp32": round(base_ips * flops_per_image / peak_fp32, 3)},
        "profile_ours": profile_summary(lambda: ours(args.width, x[: 2 * args.batch_size], y[: 2 * args.batch_size],
                                                     args.batch_size, device, "bf16"), device),
    }
    if args.compile:
        compiled = ours(args.width, x[: steps * args.batch_size], y[: steps * args.batch_size], args.batch_size,
                        device, "bf16", compile_model=True)
        result["ours_compiled_img_per_s"] = round(compiled, 1)
        result["compile_speedup"] = round(compiled / ours_ips, 2)
    if args.cifar10:
        result["cifar10_100_epochs"] = real_data_run(args.cifar10, args.width, device)
    report("classifier", device, result, save=not args.no_save)


def real_data_run(path: str, width: int, device: torch.device) -> dict:
    """GaFi's real-data recipe on CIFAR-10 (40k/10k train/val as in its code is for search; the accuracy
    target is the full 50k train split): wall seconds and test accuracy."""
    from pathlib import Path

    from synthgap.data import load_dataset

    # CIFAR's python batches (cifar-10-batches-py/ inside PATH), or an ImageFolder export (PATH/train/<class>/,
    # PATH/test/<class>/, e.g. the JPEG copy used for development: lossy, so its accuracy can differ a little)
    loader = "imagefolder" if (Path(path) / "train").is_dir() and (Path(path) / "test").is_dir() else "cifar10"
    data = load_dataset(loader, Path(path), download=False, image_size=None)
    cfg = TrainConfig(epochs=100, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                      milestones=(50, 75))
    model = make_model(width, device)
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    train = (to(data.x_train).to(device), torch.from_numpy(data.y_train).to(device))
    test = (to(data.x_test).to(device), torch.from_numpy(data.y_test).to(device))
    holder = {}
    seconds = timed(lambda: holder.setdefault("r", train_classifier(model, train, cfg, seed=0, device=device,
                                                                    evals={"test": test}, eval_every_epoch=False,
                                                                    desc="cifar10")), device)
    return {"seconds": round(seconds, 1), "test_top1": round(holder["r"].final["test_top1"], 2), "paper_top1": 94.98,
            "data": f"{loader} ({len(data.y_train)} train / {len(data.y_test)} test images)"}


if __name__ == "__main__":
    main()
