"""Seconds per epoch of GaFi's accurate pipeline: regenerate + filter the whole synthetic set, then train one
classifier epoch on it, all on the device (no disk), with the paper-size networks of ``params/cifar10.yaml``.

    python -m benchmarks.recycle [--device cpu|cuda] [--images N] [--quick]

The generator (BigGAN-deep, ``gafi.gan``) is randomly initialised (speed does not depend on its weights);
the filter classifier is first trained for four epochs on the generator's unfiltered output (threshold 0.0).
The acceptance rate is reported: candidates drawn per kept image drive the generation cost, and a random
generator whose classes look alike gives a low rate, so the figure is pessimistic next to a trained pair. ``--images`` is the synthetic set size
(paper: 40,000 = the real train split); smaller sets are timed and scaled to it. On the CPU the default is
the embedded digits networks of ``params.yaml`` (a CI-sized smoke run; the paper-size numbers need a GPU).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import CIFAR_MEAN, CIFAR_STD, pick_device, profile_summary, report, timed
from synthgap.config import load_stage_params
from synthgap.gafi.filtering import filtered_sample
from synthgap.gafi.recycle import RecycledSet
from synthgap.gafi.sampling import balanced_counts
from synthgap.models import ClassifierSpec, build_classifier
from synthgap.models.biggan import GanSpec, Generator
from synthgap.paths import repo_root
from synthgap.train.classifier import train_classifier

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--images", type=int, help="synthetic images per epoch (default: 40,000 on CUDA, 1,047 on CPU)")
    ap.add_argument("--paper-images", type=int, default=40_000, help="the set size seconds are scaled to")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run (512 images)")
    ap.add_argument("--batch-size", type=int, help="generation/filter batch (default: the preset's on CUDA, 128 on CPU)")
    ap.add_argument("--preset", help="params file with the networks (default: params/cifar10.yaml on CUDA, the "
                    "embedded params.yaml on CPU: the paper-size GAN takes minutes per image batch there)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    device = pick_device(args.device)
    n = args.images or (40_000 if device.type == "cuda" else (512 if args.quick else 1047))
    preset_file = args.preset or ("params/cifar10.yaml" if device.type == "cuda" else "params.yaml")
    preset = load_stage_params("cas_final", repo_root() / preset_file, section="gafi").section
    size, channels = (32, 3) if "cifar" in preset_file else (8, 1)
    gan = preset.gan.model_dump(include={"z_dim", "shared_dim", "g_width", "d_width", "depth", "attention_resolution"})
    torch.manual_seed(0)
    generator = Generator(GanSpec(10, size, channels, **gan)).to(device).eval()
    judge = build_classifier(ClassifierSpec("resnet20", 10, channels, size, width=preset.cas.model.width,
                                            mean=CIFAR_MEAN[:channels], std=CIFAR_STD[:channels])).to(device).eval()
    batch = args.batch_size or (preset.filter_batch_size if device.type == "cuda" else 128)
    quota = balanced_counts(n, 10)
    cfg = preset.cas.train.model_copy(update={"epochs": 3, "milestones": (1,)})
    x, y, _ = filtered_sample(generator, None, quota, 1.0, None, base_seed=99, batch_size=batch)
    train_classifier(judge, (x, y), cfg.model_copy(update={"epochs": 4}), seed=1, device=device, desc="judge")
    judge.eval()

    def make(seed: int, counts=quota):
        return filtered_sample(generator, judge, counts, 1.0, 0.0, base_seed=seed, max_rounds=preset.filter_rounds,
                               batch_size=batch)

    student = build_classifier(ClassifierSpec("resnet20", 10, channels, size, width=preset.cas.model.width,
                                              mean=CIFAR_MEAN[:channels], std=CIFAR_STD[:channels]))
    recycled = RecycledSet(make, every=1, run_seed=0)
    history = train_classifier(student, recycled, cfg, seed=0, device=device, desc="recycle").history
    epoch_s = sum(r["seconds"] for r in history[1:]) / (len(history) - 1)  # epoch 1 warms up
    generate_s = timed(lambda: make(123), device)
    scale = args.paper_images / n
    stats = recycled.stats()
    result = {
        "benchmark": "recycle",
        "preset": preset_file,
        "image_size": size,
        "generator": f"BigGAN-deep g_width {gan['g_width']} depth {gan['depth']}",
        "classifier": f"resnet20 w{preset.cas.model.width}",
        "images_per_epoch": n,
        "generate_batch_size": batch,
        "filter_acceptance": round(stats["filter_acceptance"], 3),
        "seconds_per_epoch": round(epoch_s, 3),
        "generate_filter_seconds": round(generate_s, 3),  # timed on its own, outside the epoch
        "paper_images": args.paper_images,
        "projected_s_per_epoch_paper_size": round(epoch_s * scale, 2),
        "projected_s_per_100_epochs": round(100 * epoch_s * scale, 1),
        # a small set: the profiler's bookkeeping grows faster than linearly with the number of ops
        "profile_generate_filter": profile_summary(lambda: make(7, balanced_counts(min(n, 256), 10)), device),
    }
    report("recycle", device, result, save=not args.no_save)


if __name__ == "__main__":
    main()
