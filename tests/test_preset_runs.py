"""Every GaFi preset in params/ runs end to end under `dvc repro` (marker ``preset``; run with ``-m preset``).

params/imagenette.yaml (Stable Diffusion 1.5) has its own smoke run at the end of this module: its Real-Fake
stages with SD-1.5's architecture and random weights at 64 px, about 80 s.

For each other preset, a fresh workspace gets the
repository's files (git-tracked and untracked-but-not-ignored: dvc.yaml, stages/, src/, ...; no outputs, no
dvc.lock), a few hundred images of the preset's dataset written in that dataset's real on-disk format under
data/raw/<name>/ (tests/preset_data.py: CIFAR pickles, Fashion-MNIST idx.gz, CINIC-10 PNG folders, the
DermaMNIST .npz), and a params.yaml made from the preset by :func:`shrink`: the preset's recipes (optimisers,
schedules, augmentation, GAN loss and EMA settings, block layouts, filtering, selection) with epochs, steps,
trials (2), grids (one or two values), checkpoint lists, generators, synthetic and base sizes cut to the
minimum. The cut works on the parsed preset, so keys added to a preset later flow through unchanged. Then
``dvc repro report_gafi`` runs the 13 GaFi stages (prepare_data, train_reference, train_generator@0,
select_checkpoint@0, tune_stddev@0, tune_threshold@0, cas_final, cas_multi, cas_baseline, three ablations,
report_gafi) and the GaFi reports must hold numbers.

Widths: on a CPU the networks are also narrowed (BigGAN g/d_width 128 -> 8, ResNet width -> 8; depth, blocks,
attention and every recipe key stay). Measured on the 2-core development machine, the full-width networks run
at 7-15 GFLOPS: one full-size GAN epoch over 200 images (~48 GFLOP per image for 3 D + 1 G updates) takes about
15 minutes, a single full-width ResNet-20 step on 32 images about 10 s. ``SYNTHGAP_PRESET_FULL_WIDTH=1`` keeps
the full widths (and ``device: auto``), for a GPU machine.

The whole graph (Equivalence: EDM UNet and ResNet-110 trainings; Real-Fake: the latent-diffusion stand-in at
512 px) is not run: it is far beyond ~5 minutes per preset on this CPU.

Why not in the default suite: the cost is per stage, not per image. Every stage is a fresh process (Python,
torch and MLflow start, DVC hashing, a data load, child runs), 12-25 s here even with tiny data, so one preset
is 13 stages x that fixed cost and the six presets add up to about 21 minutes, twice the default suite's
10-minute CI limit on their own. Measured on the shared 2-core development machine (one torch thread per stage,
three presets at a time): cifar10 162-201 s, cifar10-quick 173 s, cifar100 309 s (100 classes), cinic10 174 s,
dermamnist 158-195 s, fashion_mnist 163-200 s. Run them when a preset, dvc.yaml or a GaFi stage changes:
``python -m pytest -n 0 -m preset tests/test_preset_runs.py -q -s`` (or one preset with ``-k cifar100``; ``-s``
prints each run's time).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.preset_data import NUM_CLASSES, WRITERS

pytestmark = pytest.mark.preset

PRESETS = sorted(p for p in (REPO / "params").glob("*.yaml") if p.stem != "imagenette")
FULL_WIDTH = os.environ.get("SYNTHGAP_PRESET_FULL_WIDTH") == "1"
SKIP_TOP = {"data", "models", "reports", "benchmarks", "tests", "params", "scripts", "dvc.lock", "params.yaml"}
GAFI_TARGET = "report_gafi"
TRAIN_PER_CLASS = {"cifar100": 4}  # 100 classes: 400 images; the others 20 per class
TEST_PER_CLASS = {"cifar100": 2}


def repository_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and f.split("/")[0] not in SKIP_TOP and (REPO / f).is_file()]


def fresh_workspace(root: Path) -> Path:
    """The repository's code and DVC setup in ``root`` (a new git repository, as DVC wants one)."""
    for name in repository_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def is_train_recipe(node: dict) -> bool:
    return {"epochs", "lr", "milestones"} <= node.keys()


def shrink(preset: dict, num_classes: int, train_images: int, test_images: int,
           full_width: bool = FULL_WIDTH) -> dict:
    """The preset with its recipes and architectures, and everything that scales run time cut to the minimum."""
    p = copy.deepcopy(preset)
    p["trials"] = 2
    p["device"] = "auto" if full_width else "cpu"
    p["data"] = {**p.get("data", {}), "path": None, "download": False}
    p.setdefault("prepare_data", {})["val_size"] = num_classes * (2 if train_images >= 10 * num_classes else 1)

    def walk(node):
        if isinstance(node, dict):
            if is_train_recipe(node):  # a classifier recipe: 2 epochs, the lr drop after the first
                node["epochs"] = 2
                if node.get("schedule", "multistep") == "multistep":
                    node["milestones"] = [1]
                node.pop("warmup_epochs", None)
            for key, value in node.items():
                if key == "width" and not full_width and isinstance(value, int):
                    node[key] = min(value, 8)
                elif key == "steps" and isinstance(value, int):
                    node[key] = 2
                walk(value)
            if "inception_weights" in node:  # quality measurements: no Inception file offline, a few images
                node["inception_weights"] = None
                if isinstance(node.get("images"), int) and node["images"] > 0:
                    node["images"] = test_images
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(p)
    g = p.setdefault("gafi", {})
    gan = g.setdefault("gan", {})
    gan.update(epochs=2, checkpoint_every=1, state_every=1)
    if not full_width:
        gan.update(g_width=min(gan.get("g_width", 128), 8), d_width=min(gan.get("d_width", 128), 8))
    seeds = g.get("generator_seeds", [0])
    g["generator_seeds"], g["num_generators"] = seeds[:1], [1]
    g["synthetic_size"] = 4 * num_classes
    g["filter_rounds"] = 1  # one round of 1.1 x the quota, then the unfiltered fill: an untrained GAN passes ~0 %
    g.update(checkpoint=None, stddev=None, threshold=None)  # the searches choose
    search = g.setdefault("search", {})
    search["checkpoints"] = [1, 2]
    for key in ("stddevs", "thresholds"):
        if key in search:
            search[key] = sorted({search[key][0], search[key][-1]})
    for key, value in g.get("ablation", {}).items():
        g["ablation"][key] = value[:1]
    eq = p.get("equivalence")
    if eq:
        eq["base_sizes"] = [min(4 * num_classes, min(eq.get("base_sizes", [0])))]  # room for real additions
        for key in ("real_ratios", "syn_ratios", "fit_ratios"):
            if key in eq:
                eq[key] = eq[key][:1]
        eq["epochs_by_base"] = [[10**9, 2]]
        eq["ratios_by_base"] = []  # its base sizes are gone
    return p


def run_dvc(ws: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "SYNTHGAP_DEBUG"))}
    env["PYTHONPATH"] = str(ws)
    # one torch thread per stage: on a shared 2-core machine two threads per process run ~4x slower (measured)
    env.setdefault("SYNTHGAP_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", env["SYNTHGAP_THREADS"])
    return subprocess.run(["dvc", *args], cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_runs_gafi_end_to_end(preset: Path, tmp_path: Path, record_property):
    raw = yaml.safe_load(preset.read_text())
    name = raw["data"]["name"]
    if name not in WRITERS:
        pytest.skip(f"no stand-in writer for dataset {name!r}")
    k, per_class = NUM_CLASSES[name], TRAIN_PER_CLASS.get(name, 20)
    ws = fresh_workspace(tmp_path / "ws")
    WRITERS[name](ws / "data" / "raw" / name, per_class, TEST_PER_CLASS.get(name, 4))
    test_per_class = TEST_PER_CLASS.get(name, 4)
    params = shrink(raw, k, k * per_class, k * test_per_class)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    start = time.perf_counter()
    proc = run_dvc(ws, "repro", GAFI_TARGET, timeout=1800)
    seconds = time.perf_counter() - start
    record_property("dvc_repro_seconds", round(seconds, 1))
    print(f"\n{preset.name}: dvc repro {GAFI_TARGET} took {seconds:.0f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    info = json.loads((ws / "data" / "processed" / "info.json").read_text())
    assert info["name"] == name and info["sizes"]["val"] == params["prepare_data"]["val_size"]
    gafi = ws / "reports" / "gafi"
    headline = json.loads((gafi / "summary.json").read_text())["headline"]
    for key in ("real_top1", "baseline_cas", "gafi_cas"):
        mean = headline[key]["mean"]
        assert isinstance(mean, (int, float)) and math.isfinite(mean) and 0 <= mean <= 100, (key, headline[key])
    final = json.loads((gafi / "cas_final.json").read_text())["best"]
    assert len(final["cas_trials"]) == 2
    for table in ("table1", "table2", "table3", "table4"):
        text = (gafi / f"{table}.md").read_text()
        assert any(ch.isdigit() for ch in text), table
    ours = [line for line in (gafi / "table4.md").read_text().splitlines() if line.endswith("| ours |")]
    assert [line.split("|")[1].strip() for line in ours] == ["Real Data", "Baseline", "GaFi"], ours
    figure3 = (gafi / "figure3.csv").read_text().splitlines()
    assert len(figure3) == 1 + 2  # header + the two searched checkpoints of the one generator


def shrink_all(preset: dict, num_classes: int, train_images: int, test_images: int) -> dict:
    """:func:`shrink`, plus the Equivalence and Real-Fake stages cut to the minimum, for the whole graph."""
    p = shrink(preset, num_classes, train_images, test_images)
    diffusion = p["equivalence"]["diffusion"]
    diffusion.update(steps=2, duration_mimg=None, sampler_steps=2, batch_size=min(diffusion["batch_size"], 16),
                     state_every=0)
    rf = p["realfake"]
    rf["pretrain"].update(clip_steps=2, vae_steps=2, unet_steps=2, width=preset["realfake"]["pretrain"]["width"])  # VAE: width / 2
    rf["finetune"].update(steps=2, batch_size=4, state_every=0)
    rf["synthesis"].update(steps=2)
    rf["scales"] = rf["scales"][:1]
    rf["privacy"].update(shadows=2, finetune_steps=2)
    eq, cg = p["equivalence"], p["compare_generators"]
    cg["edm_base"] = eq["base_sizes"][0]
    cg["images"] = round(max(eq["syn_ratios"]) * cg["edm_base"])  # the EDM pool holds this many
    cg["filter_rounds"] = p["gafi"]["filter_rounds"]
    return p


LEAVES = ("report_gafi", "augment", "measure_synthetic", "evaluate_realfake", "attack_membership", "detect_copies",
          "compare_generators")


def test_cifar10_preset_runs_the_whole_graph(tmp_path: Path):
    """Every stage of dvc.yaml (GaFi, Equivalence, Real-Fake) under `dvc repro` with params/cifar10.yaml's recipes.

    All but the equivalence fit and the summary run to the end. Classifiers trained 2 epochs on 180 images are at
    chance, so no real-vs-synthetic accuracy tuple can be solved: fit_equivalence must then stop with its one line."""
    preset = REPO / "params" / "cifar10.yaml"
    raw = yaml.safe_load(preset.read_text())
    ws = fresh_workspace(tmp_path / "ws")
    WRITERS["cifar10"](ws / "data" / "raw" / "cifar10", 20, 4)
    (ws / "params.yaml").write_text(yaml.safe_dump(shrink_all(raw, 10, 200, 40), sort_keys=False))
    start = time.perf_counter()
    proc = run_dvc(ws, "repro", *LEAVES, timeout=3000)
    print(f"\ncifar10.yaml: dvc repro {' '.join(LEAVES)} took {time.perf_counter() - start:.0f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    status = run_dvc(ws, "status", *LEAVES, timeout=300)
    assert "up to date" in status.stdout.lower(), status.stdout
    assert json.loads((ws / "reports" / "gafi" / "summary.json").read_text())["comparisons"]
    assert json.loads((ws / "reports" / "realfake" / "summary.json").read_text())
    table = (ws / "reports" / "synthgap" / "table.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == list(raw["compare_generators"]["sources"])
    fit = run_dvc(ws, "repro", "fit_equivalence", timeout=600)
    assert fit.returncode != 0 and "solvable equivalence tuple(s); add results at more ratios" in fit.stdout + fit.stderr


IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042",
                    "n03425413", "n03445777", "n03888605")  # ImageNette's ten, sorted: the preset's class_names order


def write_imagenette(folder: Path, train: int, test: int, size: int = 80) -> None:
    """ImageNette's on-disk layout, ``{train,test}/<wnid>/*.JPEG``, with ``train``/``test`` JPEGs per class
    (a class-coloured square on noise, so the classes differ)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for c, wnid in enumerate(IMAGENETTE_WNIDS):
            (folder / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = (25 * c, 255 - 25 * c, 128)
                Image.fromarray(pixels).save(folder / split / wnid / f"{wnid}_{i}.JPEG", quality=90)


def imagenette_smoke_params(raw: dict) -> dict:
    """params/imagenette.yaml with its folders, models and recipes, cut to one CPU smoke run: 64 px (SD's
    smallest size: a latent of 8 x 8 for its three downsamplings), one trial, two ablation variants (no adapter,
    and ``full``: guidance and distribution matching), two LoRA steps, two synthesis steps (img2img: one UNet
    step at strength 0.75), no OOD sets (their loaders have their own tests)."""
    p = shrink(raw, 10, 10, 10)
    p["trials"] = 1
    p["data"].update(path=raw["data"]["path"], image_size=64)
    p["prepare_data"]["val_size"] = raw["prepare_data"]["val_size"]  # 0: the paper reports test accuracy
    rf = p["realfake"]
    rf.update(resolution=64, ablation=["base", "full"], scales=[1], ood=[],
              pretrain=raw["realfake"]["pretrain"])  # not used: base_model is set
    rf["finetune"].update(steps=2, batch_size=2, state_every=1)
    rf["synthesis"].update(steps=2, batch_size=10)
    return p


@pytest.mark.slow
def test_imagenette_preset_runs_with_a_random_sd15_architecture(tmp_path: Path):
    """Issue 16, item 8: params/imagenette.yaml's Real-Fake stages under `dvc repro`, offline, with Stable
    Diffusion 1.5's architecture (random weights, ``build_sd15``) written in the diffusers layout where the
    preset expects the download, on ten fabricated ImageNette JPEGs: the pretrained folders load, LoRA trains,
    img2img and text-to-image make images, and the ResNet-50 classifiers train and are tested."""
    from synthgap.realfake.base_model import build_sd15

    raw = yaml.safe_load((REPO / "params" / "imagenette.yaml").read_text())
    ws = fresh_workspace(tmp_path / "ws")
    write_imagenette(ws / "data" / "raw" / "imagenette", train=1, test=1)
    rf = raw["realfake"]
    words = [w for name in rf["class_names"] for w in name.lower().split()] + ["photo", "of", "best", "quality"]
    model = build_sd15(words, tmp_path / "tokenizer", vision_layers=2)  # ViT-L/14's widths, 2 of its 24 layers
    model.image_encoder.save_pretrained(ws / rf["vision_model"])
    model.image_encoder = None
    from synthgap.realfake.base_model import save_base_model

    save_base_model(model, ws / rf["base_model"])
    del model
    params = imagenette_smoke_params(raw)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    start = time.perf_counter()
    proc = run_dvc(ws, "repro", "evaluate_realfake", timeout=3000)
    print(f"\nimagenette.yaml smoke run: dvc repro evaluate_realfake took {time.perf_counter() - start:.0f} s")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]

    assert (ws / "models" / "pretrain_base_model" / "NOT_USED.txt").is_file()  # SD itself, no stand-in
    history = (ws / "reports" / "realfake" / "finetune_lora" / "full.csv").read_text().splitlines()
    assert history[0].startswith("step") and history[-1].split(",")[0] == "2"  # LoRA took its two steps
    import numpy as np

    for mode in ("img2img", "txt2img"):
        with np.load(ws / "data" / "synthetic" / "synthesize_realfake" / f"full_{mode}.npz") as s:
            x, y = s["x_train"], s["y_train"]
        assert x.shape == (10, 64, 64, 3) and x.dtype == np.uint8 and sorted(y.tolist()) == list(range(10))
        assert x.std() > 0  # an image, not a constant
    rows = [line.split(",") for line in (ws / "reports" / "realfake" / "table1.csv").read_text().splitlines()]
    assert rows[0][:2] == ["data", "top1"]
    assert [r[-1] for r in rows[1:]] == ["real", "full_img2img", "real_plus_full_img2img"]
    for row in rows[1:]:  # one trial: a mean without an interval, an accuracy all the same
        assert 0.0 <= float(row[1].split()[0]) <= 100.0, row
