"""GaFi end to end with the quick CIFAR-10 preset: the 13 stages `dvc repro report_gafi` runs, in a scratch
workspace on a folder of CIFAR-10 images, timed stage by stage.

    python -m benchmarks.quick_gafi --cifar10 DIR [--device cuda] [--per-class N] [--set KEY=VALUE ...] [--out DIR]

DIR holds CIFAR-10 as JPEG ImageFolder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``; the development copy
``cifar10-jpg.tar.xz`` extracted). The params are ``params/cifar10-quick.yaml`` (``--preset``) read from that
folder (``data.name: imagefolder``, no download) and without the Inception file (``gafi.quality`` in the
filter's feature space), plus ``--set`` overrides (YAML values, e.g. ``--set gafi.synthetic_size=500``).
``--per-class N`` keeps the first N images of each class of each split (a check on a slice of the data, as on
the CPU; ``prepare_data.val_size`` then shrinks to a tenth of the train slice). The stages run as DVC runs
them, one process each, in order; the first one to fail stops the run with its error.

Writes ``benchmarks/results/quick_gafi-<device>.json``: seconds per stage and in total, and the headline
numbers of ``reports/gafi/summary.json`` (Real Data, Baseline and GaFi CAS with their 95 % intervals) with the
GaFi-vs-Baseline and GaFi-vs-Real verdicts; ``--out`` receives the workspace's GaFi tables (``reports/gafi/*.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import pick_device, report
from synthgap.config import read_params_file
from synthgap.paths import repo_root

STAGES = [("prepare_data",), ("train_reference",), ("train_generator", "0"), ("select_checkpoint", "0"),
          ("tune_stddev", "0"), ("tune_threshold", "0"), ("cas_final",), ("cas_multi",), ("cas_baseline",),
          ("ablate_filtering",), ("ablate_recycle",), ("ablate_stddev",), ("report_gafi",)]


def set_key(params: dict, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = params
    for key in path:
        if not isinstance(node.get(key), dict):
            sys.exit(f"quick_gafi: error: --set {dotted}: {key} is no section of the preset")
        node = node[key]
    node[last] = value


def sliced(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` images (sorted by name) of each class of each split, linked into ``target``."""
    for split in ("train", "test"):
        for folder in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            (target / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:per_class]:
                (target / split / folder.name / image.name).symlink_to(image.resolve())
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cifar10", type=Path, required=True, help="ImageFolder root with train/ and test/")
    ap.add_argument("--device", choices=["cpu", "cuda"])
    ap.add_argument("--preset", default="params/cifar10-quick.yaml", help="params file (relative to the repository)")
    ap.add_argument("--per-class", type=int, help="images per class and split (a slice of the data)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="params override (YAML value)")
    ap.add_argument("--out", type=Path, help="folder for the GaFi tables")
    ap.add_argument("--keep", action="store_true", help="keep the scratch workspace (its path is printed)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    device = pick_device(args.device)
    root = repo_root()
    if not (args.cifar10 / "train").is_dir() or not (args.cifar10 / "test").is_dir():
        sys.exit(f"quick_gafi: error: {args.cifar10} has no train/ and test/ folders; extract cifar10-jpg.tar.xz there")

    ws = Path(tempfile.mkdtemp(prefix="quick_gafi."))
    (ws / ".git").mkdir()  # the workspace root the stages look for
    data = sliced(args.cifar10, ws / "data" / "slice", args.per_class) if args.per_class else args.cifar10.resolve()
    params = read_params_file(root / args.preset)
    for key, value in (("device", device.type), ("data.name", "imagefolder"), ("data.path", str(data)),
                       ("data.download", False), ("gafi.quality.inception_weights", None)):
        set_key(params, key, value)
    if args.per_class:
        set_key(params, "prepare_data.val_size", max(10, args.per_class))  # a tenth of the train slice
    for item in args.set:
        key, _, text = item.partition("=")
        set_key(params, key, yaml.safe_load(text))
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy(root / "dvc.yaml", ws / "dvc.yaml")  # the stages take their paths from its cmd
    print(f"quick_gafi: workspace {ws}, {args.preset} on {data} ({device.type})", flush=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    seconds: dict[str, float] = {}
    for stage, *item in STAGES:
        name = "@".join([stage, *item])
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", *item], cwd=ws, env=env)
        seconds[name] = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0:
            sys.exit(f"quick_gafi: error: {name} failed (exit {proc.returncode}) after {sum(seconds.values()):.0f} s; "
                     f"workspace kept in {ws}")
        print(f"quick_gafi: {name} {seconds[name]:.1f} s", flush=True)

    summary = json.loads((ws / "reports" / "gafi" / "summary.json").read_text())
    verdicts = {c["name"]: {k: c[k] for k in ("diff_mean", "ci95", "verdict")} for c in summary["comparisons"]
                if c["name"] in ("gafi_vs_baseline", "gafi_vs_real")}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for table in sorted((ws / "reports" / "gafi").glob("*.md")):
            shutil.copy(table, args.out / table.name)
    result = {"benchmark": "quick_gafi", "preset": args.preset, "data": str(args.cifar10),
              "per_class": args.per_class, "overrides": args.set, "stage_seconds": seconds,
              "total_s": round(sum(seconds.values()), 1), "headline": summary["headline"], "comparisons": verdicts}
    report("quick_gafi", device, result, save=not args.no_save)
    if args.keep:
        print(f"quick_gafi: workspace kept in {ws}")
    else:
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
