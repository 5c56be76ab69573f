from pathlib import Path

import pytest

from synthgap.config import SECTIONS, load_stage_params
from tests.conftest import REPO

PRESETS = sorted((REPO / "params").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_every_preset_is_a_valid_params_file(preset: Path):
    for stage in SECTIONS:
        load_stage_params(stage, preset)


def test_cifar10_preset_is_the_gafi_recipe():
    cfg = load_stage_params("train_reference", REPO / "params" / "cifar10.yaml").section.classifier
    assert (cfg.model.arch, cfg.model.width) == ("resnet20", 64)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.milestones, cfg.train.crop_padding) == (100, 0.1, (60, 80), 4)


def test_cifar10_preset_has_the_gafi_paper_settings():
    gafi = load_stage_params("cas_final", REPO / "params" / "cifar10.yaml", section="gafi").section
    assert (gafi.gan.z_dim, gafi.gan.g_width, gafi.gan.depth, gafi.gan.d_steps, gafi.gan.ema_decay) == (128, 128, 2, 3, 0.9999)
    assert gafi.search.checkpoints[0] == 150 and gafi.search.checkpoints[-1] == 500 and len(gafi.search.checkpoints) == 36
    assert len(gafi.search.stddevs) == 21 and len(gafi.search.thresholds) == 10
    assert gafi.num_generators == (1, 2, 4, 6) and gafi.cas.model.width == 64


def test_imagenette_preset_has_the_real_fake_code_settings():
    rf = load_stage_params("finetune_lora", REPO / "params" / "imagenette.yaml", section="realfake").section
    assert (rf.finetune.rank, rf.finetune.lr, rf.finetune.batch_size, rf.finetune.snr_gamma) == (4, 1e-4, 8, 5.0)
    assert (rf.finetune.distribution, rf.finetune.weight, rf.finetune.guidance) == ("mean", 0.003, "image")
    s = rf.synthesis
    assert (s.strength, s.steps, s.guidance_scale, s.lora_scale, rf.resolution) == (0.75, 30, 2.0, 0.5, 512)
    assert rf.scales == (1, 2, 5, 10) and rf.privacy.shadows == 10 and len(rf.class_names) == 10
    assert (rf.classifier.model.arch, rf.classifier.train.epochs, rf.classifier.train.gamma) == ("resnet50", 200, 0.2)


def train_configs(obj, where: str = ""):
    """Every classifier training recipe (TrainConfig) inside a validated params section."""
    from pydantic import BaseModel

    from synthgap.config import TrainConfig

    if isinstance(obj, TrainConfig):
        yield where, obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from train_configs(getattr(obj, name), f"{where}.{name}")


@pytest.mark.parametrize("path", [REPO / "params.yaml", *PRESETS], ids=["params.yaml", *(p.name for p in PRESETS)])
def test_every_shipped_classifier_recipe_writes_resumable_state(path: Path):
    found = {}
    for section in SECTIONS:
        body = load_stage_params(section, path, section=section).section
        found.update({f"{section}{where}": cfg.checkpoint_every for where, cfg in train_configs(body)})
    assert len(found) >= 4 and all(every > 0 for every in found.values()), found


# ------------------------------------------------------------------------------------ GaFi dataset presets
# Expected values read from the official GaFi code, github.com/sup3rgiu/GaFi-Pipeline at 900540f (HEAD):
# configs/<DATASET>/BigGAN_deep.yaml (GAN), Pipeline.yaml (search grids, filtering_attempts, CAS recipe),
# ResNet20.yaml (filter classifier), utils/datasets.py (validation split sizes). The GAN, CAS and search
# settings shared by all five datasets are checked once in OFFICIAL_COMMON.
STDDEVS = tuple(round(1.0 + 0.05 * i, 2) for i in range(21))  # Pipeline.yaml stddev_search: (1, 2, 0.05)
OFFICIAL = {
    # configs/FashionMNIST/BigGAN_deep.yaml epochs 300; Pipeline.yaml ckpt_epochs (50, 500, 10) cut at the 300
    # trained epochs, threshold_search (0, 0.9, 0.1), filtering_attempts -1; val = len(X_test) = 10,000
    "fashion_mnist.yaml": dict(name="fashion_mnist", gan_epochs=300, checkpoints=tuple(range(50, 301, 10)),
                               thresholds=10, filter_rounds=1000, val_size=10000),
    # configs/CIFAR10/BigGAN_deep.yaml epochs 500; Pipeline.yaml ckpt_epochs (150, 500, 10), filtering_attempts -1
    "cifar10.yaml": dict(name="cifar10", gan_epochs=500, checkpoints=tuple(range(150, 501, 10)), thresholds=10,
                         filter_rounds=1000, val_size=10000),
    # configs/CIFAR100/BigGAN_deep.yaml epochs 500; Pipeline.yaml ckpt_epochs (150, 500, 10), filtering_attempts 10
    "cifar100.yaml": dict(name="cifar100", gan_epochs=500, checkpoints=tuple(range(150, 501, 10)), thresholds=10,
                          filter_rounds=10, val_size=10000),
    # configs/CINIC10/BigGAN_deep.yaml epochs 500; Pipeline.yaml ckpt_epochs (150, 500, 10), filtering_attempts -1;
    # utils/datasets.py: train + valid merged, test_size=10000
    "cinic10.yaml": dict(name="cinic10", gan_epochs=500, checkpoints=tuple(range(150, 501, 10)), thresholds=10,
                         filter_rounds=1000, val_size=10000),
    # configs/DermaMNIST/BigGAN_deep.yaml epochs 150; Pipeline.yaml ckpt_epochs (10, 150, 10), threshold_search
    # (0, 0.5, 0.1), filtering_attempts -1; MedMNIST's val split has 1,003 images
    "dermamnist.yaml": dict(name="dermamnist", gan_epochs=150, checkpoints=tuple(range(10, 151, 10)), thresholds=6,
                            filter_rounds=1000, val_size=1003),
}


@pytest.mark.parametrize("preset", sorted(OFFICIAL), ids=sorted(OFFICIAL))
def test_gafi_preset_has_the_official_values_of_its_dataset(preset):
    path = REPO / "params" / preset
    want = OFFICIAL[preset]
    gafi_params = load_stage_params("cas_final", path, section="gafi")
    gafi, gan = gafi_params.section, gafi_params.section.gan
    assert gafi_params.data.name == want["name"]
    assert load_stage_params("prepare_data", path).section.val_size == want["val_size"]
    # BigGAN_deep.yaml: studiogan BigGAN-deep, latent/shared/conv dims 128, g/d_depth 2, attention (at 16x16),
    # Adam 2e-4 (0.5, 0.999) eps 1e-6, d_updates_per_step 3 on batches of 64 x 3 = 192, hinge, EMA from step 1000,
    # horizontal_flip, merge_train_val, random_labels False
    assert (gan.z_dim, gan.shared_dim, gan.g_width, gan.d_width, gan.depth, gan.attention_resolution) == (128, 128, 128, 128, 2, 16)
    assert (gan.blocks, gan.lr_g, gan.lr_d, gan.betas, gan.eps, gan.d_steps, gan.batch_size) == (
        "studiogan", 2e-4, 2e-4, (0.5, 0.999), 1e-6, 3, 192)
    assert (gan.ema_start, gan.flip, gan.merge_train_val, gan.random_labels) == (1000, True, True, False)
    assert gan.epochs == want["gan_epochs"] and gan.checkpoint_every == 1  # every epoch: Figure 3
    # Pipeline.yaml: the search grids and the filtering bound (-1 = unlimited -> the largest allowed bound)
    assert gafi.search.checkpoints == want["checkpoints"] and gafi.search.checkpoints[-1] <= gan.epochs
    assert gafi.search.stddevs == STDDEVS
    assert gafi.search.thresholds == tuple(round(0.1 * i, 1) for i in range(want["thresholds"]))
    assert (gafi.search.fast_recycle, gafi.accurate_recycle, gafi.filter_rounds) == (10, 1, want["filter_rounds"])
    # paper Table 4: K = 1, 2, 4, 6 generators
    assert gafi.num_generators == (1, 2, 4, 6) and len(gafi.generator_seeds) == 6
    # Pipeline.yaml (CAS) and ResNet20.yaml (filter classifier): ResNet-20 w64, SGD 0.1 / 0.9 Nesterov, wd 1e-4,
    # batch 128, flip + crop; lr x0.1 at 60/80 (utils/train_fns.py, train_classifier.py); CAS 100 epochs
    reference = load_stage_params("train_reference", path).section.classifier
    for cfg in (gafi.cas, reference):
        t = cfg.train
        assert (cfg.model.arch, cfg.model.width) == ("resnet20", 64)
        assert (t.lr, t.momentum, t.nesterov, t.weight_decay, t.batch_size) == (0.1, 0.9, True, 1e-4, 128)
        assert (t.epochs, t.milestones, t.gamma, t.flip, t.crop_padding) == (100, (60, 80), 0.1, True, 4)
    # Pipeline.yaml / ResNet20.yaml: optimizer "sgdw", random_erasing True (CAS and filter classifier)
    assert (gafi.cas.train.optimizer, gafi.cas.train.erasing) == ("sgdw", True)
    # ResNet20.yaml + train_classifier.py: the filter classifier, 300 epochs, lr x0.1 at 60/80, best val epoch kept
    f = load_stage_params("train_reference", path).section.filter
    assert (f.model.arch, f.model.width, f.train.epochs, f.train.milestones) == ("resnet20", 64, 300, (60, 80))
    assert (f.train.optimizer, f.train.erasing, f.train.restore_best, f.train.lr, f.train.batch_size) == ("sgdw", True, True, 0.1, 128)
    # the official ResNet-20 (models/resnet.py): parameter-free shortcuts (option A), He-normal init; its inputs
    # are scaled to [-1, 1] before the zero padding of the random crop, i.e. mid-grey (128) in uint8; SGDW
    for cfg in (gafi.cas, reference, f):
        assert (cfg.model.shortcut, cfg.model.init, cfg.train.crop_fill, cfg.train.optimizer) == ("A", "he_normal", 128, "sgdw")


@pytest.mark.parametrize("preset", sorted(set(OFFICIAL) - {"cifar10.yaml"}))
def test_new_gafi_presets_use_the_official_ema_decay(preset):
    """configs/*/BigGAN_deep.yaml at HEAD: g_ema_decay 0.9999 (commit 0f80431 "Typo ema_decay value" fixed 0.999)."""
    assert load_stage_params("cas_final", REPO / "params" / preset, section="gafi").section.gan.ema_decay == 0.9999


def paths_of(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(paths_of(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def test_quick_cifar10_preset_is_cifar10_with_only_epochs_and_grids_cut():
    import yaml

    full = paths_of(yaml.safe_load((REPO / "params" / "cifar10.yaml").read_text()))
    quick = paths_of(yaml.safe_load((REPO / "params" / "cifar10-quick.yaml").read_text()))
    assert set(quick) == set(full)  # every key of the full preset, none added
    cut = {key for key in full if full[key] != quick[key]}
    allowed_gafi = {"trials", "train_reference.classifier.train.epochs", "train_reference.classifier.train.milestones",
                    "train_reference.filter.train.epochs", "train_reference.filter.train.milestones",
                    "gafi.generator_seeds", "gafi.num_generators", "gafi.gan.epochs", "gafi.gan.checkpoint_every",
                    "gafi.cas.train.epochs", "gafi.cas.train.milestones", "gafi.synthetic_size", "gafi.filter_rounds",
                    "gafi.search.checkpoints", "gafi.search.stddevs", "gafi.search.thresholds",
                    "gafi.ablation.thresholds", "gafi.ablation.recycle", "gafi.ablation.stddevs"}
    allowed_compare = {"compare_generators.images", "compare_generators.edm_base", "compare_generators.filter_rounds",
                       "compare_generators.classifier.train.epochs", "compare_generators.classifier.train.milestones"}
    assert cut - allowed_gafi - allowed_compare <= {key for key in full if key.startswith("equivalence.")}, cut - allowed_gafi
    gafi = load_stage_params("cas_final", REPO / "params" / "cifar10-quick.yaml", section="gafi").section
    assert (gafi.generator_seeds, gafi.num_generators, gafi.gan.g_width, gafi.gan.blocks) == ((0,), (1,), 128, "studiogan")
    assert (gafi.cas.model.arch, gafi.cas.model.width) == ("resnet20", 64)
    assert max(gafi.search.checkpoints) <= gafi.gan.epochs and gafi.gan.checkpoint_every == 1


GAFI_STAGES = ("prepare_data", "train_reference", "train_generator", "select_checkpoint", "tune_stddev",
               "tune_threshold", "cas_final", "cas_multi", "cas_baseline", "ablate_filtering", "ablate_recycle",
               "ablate_stddev", "report_gafi")  # what `dvc repro report_gafi` runs


def dvc_params(stages=GAFI_STAGES) -> set[str]:
    """The params.yaml keys that these stages of dvc.yaml list (DVC stops a stage whose key is missing)."""
    import yaml

    keys = set()
    for name in stages:
        stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
        for entry in stage.get("do", stage).get("params", []):
            keys.update([entry] if isinstance(entry, str) else [k for v in entry.values() for k in v])
    return keys


GAFI_PRESETS = [p for p in PRESETS if p.stem != "imagenette"]


@pytest.mark.parametrize("preset", GAFI_PRESETS, ids=[p.name for p in GAFI_PRESETS])
def test_gafi_presets_hold_every_key_the_gafi_stages_list(preset: Path):
    import yaml

    tree = yaml.safe_load(preset.read_text())

    def present(key: str) -> bool:
        node = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = sorted(key for key in dvc_params() if not present(key))
    assert not missing, f"{preset.name} lacks {missing}: `dvc repro report_gafi` would stop"


@pytest.mark.parametrize("path", [REPO / "params.yaml", *sorted((REPO / "params").glob("*.yaml"))], ids=lambda p: p.name)
def test_the_synthgap_table_trains_gafis_cas_classifier_on_a_pool_that_holds_its_sets(path):
    """compare_generators measures every family with the CAS protocol of gafi.cas, and the EDM pool it reads
    (the largest closed-set ratio x edm_base images, class-balanced) can fill a set of `images` (null: the train split)."""
    gafi = load_stage_params("cas_final", path, section="gafi").section
    compare = load_stage_params("compare_generators", path).section
    assert compare.classifier == gafi.cas
    equivalence = load_stage_params("augment", path, section="equivalence").section
    assert compare.edm_base in equivalence.base_sizes
    if compare.images is not None:
        assert compare.images <= round(max(equivalence.ratios(compare.edm_base, "closed")) * compare.edm_base)


def test_the_cifar10_preset_trains_exactly_the_cells_of_the_papers_tables_9_to_11():
    """Every (setting, n_base, real added, synthetic added) cell the CIFAR-10 preset's grid would train, from all
    50,000 training images (train + validation), is a row of Tables 9-11 (transcribed in
    reports/equivalence/published/cifar10.csv) and every row is a cell: Tiny to Large, real, closed and open,
    including the 0.4 / 0.8 / 1.0 real additions at 25,000 and no real ones at 50,000. No cell is dropped."""
    import pandas as pd

    from synthgap.equivalence.grid import grid_cells

    eq = load_stage_params("augment", REPO / "params" / "cifar10.yaml", section="equivalence").section
    assert eq.merge_train_val  # 40,000 train + 10,000 validation images (prepare_data.val_size)
    cells, dropped = set(), []
    for n_base in eq.base_sizes:
        grid, drops = grid_cells(n_base, 50_000, {s: eq.ratios(n_base, s) for s in ("real", "closed", "open")},
                                 ("closed", "open"))
        cells |= {(c.setting, c.n_base, c.n_real_added, c.n_syn_added) for c in grid}
        dropped += drops
    assert dropped == []
    paper = pd.read_csv(REPO / "reports" / "equivalence" / "published" / "cifar10.csv")
    rows = {("real" if r.n_real_added == r.n_syn_added == 0 else r.setting, r.n_base, r.n_real_added, r.n_syn_added)
            for r in paper.itertuples()}  # each table repeats the base-only row; the grid trains it once
    assert cells == rows


def test_the_bloodmnist_preset_trains_exactly_the_cells_of_the_papers_tables_12_and_13():
    """The BloodMNIST preset's grid over its 13,671 training images (MedMNIST train + validation) is Tables
    12-13 (reports/equivalence/published/bloodmnist.csv), cell for cell: real additions 1 / 2 / 3 x 1,200 and
    0.5 / 1 x 6,000, none at 12,000, closed-set 1-5 x n_base everywhere. No cell is dropped, none is open-set."""
    import pandas as pd

    from synthgap.equivalence.grid import grid_cells

    eq = load_stage_params("augment", REPO / "params" / "bloodmnist.yaml", section="equivalence").section
    assert eq.merge_train_val and eq.open_set.path is None
    cells, dropped = set(), []
    for n_base in eq.base_sizes:
        grid, drops = grid_cells(n_base, 11_959 + 1_712, {s: eq.ratios(n_base, s) for s in ("real", "closed")},
                                 ("closed",))
        cells |= {(c.setting, c.n_base, c.n_real_added, c.n_syn_added) for c in grid}
        dropped += drops
    assert dropped == []
    paper = pd.read_csv(REPO / "reports" / "equivalence" / "published" / "bloodmnist.csv")
    rows = {("real" if r.n_real_added == r.n_syn_added == 0 else r.setting, r.n_base, r.n_real_added, r.n_syn_added)
            for r in paper.itertuples()}
    assert cells == rows
