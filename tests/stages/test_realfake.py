"""The Real-Fake stages end to end on a tiny workspace, as `dvc repro` runs them, plus their bad inputs."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tests.conftest import REPO
from tests.stages.test_stages import TINY, assert_one_error_line, run_in_process, run_stage_here, snapshot

REALFAKE = """realfake:
  resolution: 8
  class_names: [zero, one, two, three, four, five, six, seven, eight, nine]
  prompt_template: "photo of digit {name}"
  pretrain: {corpus_images: 300, width: 16, text_width: 16, clip_steps: 10, clip_batch_size: 32, vae_steps: 30, unet_steps: 30, batch_size: 32}
  finetune: {steps: 6, batch_size: 8, lr: 1.0e-3, state_every: 3}
  synthesis: {steps: 2, batch_size: 512}
  ablation: [base, full]
  scales: [1, 2]
  classifier:
    model: {arch: resnet20, width: 4}
    train: {epochs: 1, batch_size: 128, milestones: [], crop_padding: 1, flip: false}
  privacy: {shadows: 2, fpr: [0.01], finetune_steps: 4, private_size: 40, overfit_epochs: 3}
  ood: [{name: digits_shifted, format: digits_shifted, path: null}, {name: digits_fonts, format: digits_fonts, path: null}]
"""
STAGES = ("prepare_data", "train_reference", "pretrain_base_model", "finetune_lora", "synthesize_realfake",
          "evaluate_realfake", "attack_membership", "detect_copies")


@pytest.fixture(scope="module")
def realfake(tmp_path_factory):
    ws = tmp_path_factory.mktemp("realfake")
    (ws / "params.yaml").write_text(TINY.format(name="digits", path="null") + REALFAKE)
    shutil.copy(REPO / "dvc.yaml", ws / "dvc.yaml")  # the stages take their paths from its cmd
    for stage in STAGES:  # in this process, as `python -m stages.<stage>` runs it: no 8 interpreter start-ups
        run_in_process(ws, stage)
    return ws


def test_stages_write_tables_privacy_reports_and_adapters(realfake):
    import numpy as np

    reports = realfake / "reports" / "realfake"
    with open(reports / "table1.csv") as fh:
        table1 = list(csv.DictReader(fh))
    assert [r["data"] for r in table1] == ["real only", "synthetic only", "real + synthetic"]
    assert all("±" in r["ood_digits_shifted"] and "±" in r["ood_digits_fonts"] for r in table1)  # section 4.4
    evaluated = json.loads((reports / "evaluate_realfake.json").read_text())
    digits = [str(i) for i in range(10)]
    assert evaluated["ood"] == {"digits_shifted": {"format": "digits_shifted", "images": 450, "classes": digits},
                                "digits_fonts": {"format": "digits_fonts", "images": 450, "classes": digits}}
    assert all(len(row["ood_digits_shifted_top1_trials"]) == 2 for row in evaluated["accuracy"].values())
    named = {c["name"] for c in json.loads((reports / "summary.json").read_text())["comparisons"]}
    assert {"realfake_synthetic_vs_real_ood_digits_shifted", "realfake_real_plus_synthetic_vs_real_ood_digits_shifted"} <= named
    with open(reports / "table2.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["latent_prior"], r["finetune"]) for r in rows] == [("False", "False"), ("False", "True"),
                                                                  ("True", "False"), ("True", "True")]
    assert all("±" in r["reference_top1"] for r in rows)  # how much of each set the real-data classifier recognises
    assert "realfake_full_vs_base_txt2img_recognised" in named
    pretrained = json.loads((realfake / "reports" / "metrics" / "pretrain_base_model.json").read_text())
    assert pretrained["corpus_images"] == 300  # the font corpus, not the 1,247 training digits
    assert {"clip_zero_shot_corpus", "clip_zero_shot_real", "vae_error_corpus", "vae_error_real"} <= set(pretrained)
    pretrain_reports = realfake / "reports" / "realfake" / "pretrain_base_model"
    assert (pretrain_reports / "corpus.png").is_file() and (pretrain_reports / "clip_loss.csv").is_file()
    with open(reports / "table3.csv") as fh:
        assert [r["synthetic_x"] for r in csv.DictReader(fh)] == ["1", "2", "1"]
    privacy = json.loads((reports / "attack_membership.json").read_text())
    assert {(r["training_data"], r["attack"]) for r in privacy["rows"]} == {
        (arm, attack) for arm in ("private", "synthetic", "private_overfit") for attack in ("online", "offline", "fixed_variance")}
    assert privacy["private_images"] == 40 == len(set(privacy["private_index"]))  # a subset of the train split
    with np.load(realfake / "reports" / "realfake" / "attack_membership_phi.npz") as phi:
        assert phi["keep"].shape == phi["phi_private_overfit"].shape == (2, 40)
    assert (reports / "attack_membership.png").is_file() and (reports / "detect_copies.png").is_file()
    adapter = realfake / "models" / "finetune_lora" / "full" / "adapter.pt"
    assert adapter.is_file() and not (realfake / "models" / "finetune_lora" / "base").exists()
    assert (adapter.parent / "pytorch_lora_weights.safetensors").is_file()  # for diffusers' load_lora_weights
    assert not list((realfake / ".synthgap" / "state").glob("finetune_lora-*"))  # kept only until the stage succeeds

    with np.load(realfake / "data" / "synthetic" / "synthesize_realfake" / "full_img2img.npz") as pool:
        # 2 trials x 2 copies (the largest scale), each trial with its own seeds
        assert len(pool["y_train"]) == 2 * 2 * 1247 and pool["x_train"].shape[1:] == (8, 8, 1)
        assert (pool["source_index"] == np.tile(np.arange(1247), 4)).all()
        assert len(np.unique(pool["seeds"])) == 4 * 1247
    for stage in STAGES[2:]:
        assert len(json.loads((realfake / "reports" / "metrics" / f"{stage}.json").read_text())["mlflow_run_id"]) == 32


def test_evaluate_cells_are_mlflow_child_runs_with_their_params(realfake):
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{realfake / 'mlflow.db'}")
    parent = json.loads((realfake / "reports" / "metrics" / "evaluate_realfake.json").read_text())["mlflow_run_id"]
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    names = {r.data.params["training_set"] for r in children}
    assert sorted((r.data.params["training_set"], r.data.params["trial"]) for r in children) == sorted(
        (name, str(t)) for name in names for t in (0, 1))  # one child per training set and trial
    assert names == {"real", "real_plus_full_img2img", "base_img2img", "base_txt2img", "full_img2img",
                     "full_txt2img", "full_img2img_x2"}
    assert all("accuracy" in r.data.metrics for r in children)
    with open(realfake / "reports" / "realfake" / "table1.csv") as fh:  # each cell: the mean of its trials' runs
        table1 = {r["training_set"]: float(r["top1"].split(" ± ")[0]) for r in csv.DictReader(fh)}
    for name, cell in table1.items():
        runs = [r.data.metrics["accuracy"] for r in children if r.data.params["training_set"] == name]
        assert len(runs) == 2 and cell == pytest.approx(sum(runs) / 2, abs=0.006), name


def test_a_stable_diffusion_folder_missing_a_component_is_named(realfake, tmp_path):
    before = snapshot(realfake)
    broken = realfake / "models" / "external" / "sd"
    shutil.copytree(realfake / "models" / "pretrain_base_model", broken)
    shutil.rmtree(broken / "unet")
    original = (realfake / "params.yaml").read_text()
    try:
        (realfake / "params.yaml").write_text(original.replace("realfake:\n", "realfake:\n  base_model: models/external/sd\n"))
        line = assert_one_error_line(run_stage_here("finetune_lora", realfake), "has no unet/ component")
        assert "UNet2DConditionModel" in line
    finally:
        (realfake / "params.yaml").write_text(original)
        shutil.rmtree(broken.parent)
    assert snapshot(realfake) == before


def test_evaluate_writes_paired_comparisons_with_verdicts(realfake):
    summary = json.loads((realfake / "reports" / "realfake" / "summary.json").read_text())
    assert set(summary["headline"]) == {"realfake_real_top1", "realfake_synthetic_top1", "realfake_real_plus_synthetic_top1"}
    assert all(h["trials"] == 2 and len(h["ci95"]) == 2 for h in summary["headline"].values())
    names = [c["name"] for c in summary["comparisons"]]
    assert "realfake_synthetic_vs_real" in names and "realfake_full_vs_base_img2img" in names
    assert "realfake_scale_x2_vs_x1" in names
    for c in summary["comparisons"]:
        lo, hi = c["ci95"]
        assert lo <= c["diff_mean"] <= hi and c["verdict"] == ("better" if lo > 0 else "worse" if hi < 0 else "no_difference")
    table = (realfake / "reports" / "realfake" / "table1.md").read_text()
    assert "±" in table and "2 trials" in table


def test_every_variant_and_mode_starts_each_image_from_the_same_seed(tmp_path, monkeypatch):
    """Table 2's sets are paired: image i of trial t has one seed in every variant and mode (the stage with its
    model and synthesis stubbed out, recording the seeds it asks for)."""
    from types import SimpleNamespace

    import numpy as np
    import torch

    from stages import synthesize_realfake as stage
    from synthgap.config import RealFakeConfig
    from synthgap.realfake.pipeline import trial_block

    n, trials = 5, 2
    cfg = RealFakeConfig(ablation=("base", "plain", "full"), scales=(1, 3))
    params = SimpleNamespace(section=cfg, seed=7, trials=trials, device="cpu")
    data = SimpleNamespace(image_shape=(8, 8, 1), y_train=np.arange(n) % 2, x_train=np.zeros((n, 8, 8, 1), np.uint8),
                           num_classes=2, classes=["a", "b"])
    asked = {}

    def synthesize(model, spec, prompts, seeds, **kw):
        asked[kw["desc"].split(" ", 1)[1]] = seeds
        return torch.zeros(len(seeds), 1, 8, 8, dtype=torch.uint8)

    class Run:
        def __enter__(self):
            return SimpleNamespace(log_metrics=lambda *a, **k: None)

        def __exit__(self, *exc):
            return False

    paths = SimpleNamespace(data=tmp_path, stand_in=tmp_path, adapters=tmp_path, out=tmp_path, previews=tmp_path)
    stubs = dict(realfake_params=lambda name, *wanted: (params, paths), resolve_device=lambda d: "cpu",
                 StageRun=lambda *a, **k: Run(), load_processed=lambda path: data,
                 prompts_for=lambda *a: ["photo"] * n,
                 to_device_tensors=lambda x, y, d: (torch.zeros(n, 1, 8, 8, dtype=torch.uint8), torch.from_numpy(y)),
                 load_model=lambda *a: SimpleNamespace(image_encoder=None),
                 image_embeddings=lambda enc, x: torch.zeros(len(x), 4),
                 load_adapter=lambda *a: (None, {"guidance": "image"}), guidance_embeddings=lambda *a: None,
                 synthesize=synthesize, save_synthetic=lambda *a, **k: None, sample_grid=lambda *a: None,
                 class_columns=lambda *a: slice(None))
    for name, stub in stubs.items():
        monkeypatch.setattr(stage, name, stub)
    stage.main()
    assert sorted(asked) == sorted(f"{v} {m}" for v in cfg.ablation for m in ("img2img", "txt2img"))
    assert len(asked["full img2img"]) == trials * 3 * n and len(set(asked["full img2img"])) == trials * 3 * n
    for t in range(trials):
        paired = {key: seeds[trial_block(cfg, *key.split(), n, t, 1)] for key, seeds in asked.items()}
        assert len({tuple(s) for s in paired.values()}) == 1, t  # one seed list for all sets in trial t
        assert len(set(paired["base img2img"])) == n
    assert asked["base img2img"][:n] != asked["base img2img"][n:]  # each trial its own seeds


def test_the_overfit_arm_trains_without_augmentation_for_its_epochs():
    from stages.attack_membership import overfit_recipe
    from synthgap.config import TrainConfig

    base = TrainConfig(epochs=8, milestones=(4, 6), crop_padding=1, flip=True, cutout=4, erasing=True)
    recipe = overfit_recipe(base, 60)
    assert (recipe.epochs, tuple(recipe.milestones)) == (60, (30, 45))  # the lr drops at the same fractions
    assert (recipe.crop_padding, recipe.flip, recipe.cutout, recipe.erasing) == (0, False, 0, False)
    assert (recipe.lr, recipe.batch_size, recipe.weight_decay) == (base.lr, base.batch_size, base.weight_decay)
