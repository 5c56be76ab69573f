import numpy as np
import pytest

from synthgap.equivalence.grid import Cell, balanced_prefix, cell_training_set, epochs_for, grid_cells


def test_grid_cells_and_skipped_real_ratios():
    cells, dropped = grid_cells(100, 250, {"real": (0.5, 1.0, 2.0), "closed": (1, 2)}, ("closed",))
    assert [(d["setting"], d["ratio"], d["added"]) for d in dropped] == [("real", 2.0, 200)]
    real = [c for c in cells if c.setting == "real"]
    assert [c.n_real_added for c in real] == [0, 50, 100]
    assert [c.n_syn_added for c in cells if c.setting == "closed"] == [100, 200]
    assert len(cells) == 3 + 2 and [c.name for c in cells][:2] == ["real+0", "real+50"]


def test_epochs_by_base_follow_the_schedule():
    schedule = ((500, 480), (5000, 320), (10**9, 160))
    assert [epochs_for(n, schedule) for n in (500, 501, 5000, 25000)] == [480, 320, 320, 160]


def test_cell_training_sets_have_the_cells_sizes_and_class_mixes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [100, 60, 30, 10])
    x = rng.integers(0, 255, (200, 4, 4, 1), dtype=np.uint8)
    base = np.arange(0, 200, 10)  # 20 images
    pool_y = np.arange(80) % 4
    pools = {"closed": (np.zeros((80, 4, 4, 1), np.uint8), pool_y)}
    # image i holds the value i in its first pixel, so the picked training images can be read back
    x[:, 0, 0, 0] = np.arange(200)
    xr, yr = cell_training_set(Cell("real", 20, 40, 0), x, y, base, pools, 4, seed=0)
    added = xr[20:, 0, 0, 0].astype(int)
    assert len(yr) == 60 and len(set(added)) == 40 and not set(added) & set(base.tolist())  # no base image added twice
    np.testing.assert_array_equal(np.bincount(yr[20:], minlength=4), [20, 12, 6, 2])  # real additions keep proportions
    xs, ys = cell_training_set(Cell("closed", 20, 0, 40), x, y, base, pools, 4, seed=0)
    np.testing.assert_array_equal(np.bincount(ys[20:], minlength=4), [10, 10, 10, 10])  # synthetic additions are balanced
    assert balanced_prefix(np.array([0, 0, 0, 1, 1, 2]), 4, 3).tolist() == [0, 3, 5, 1]
    with pytest.raises(ValueError):
        balanced_prefix(pool_y, 81, 4)


def test_grid_cell_params_reach_mlflow_exactly(tmp_path):
    from synthgap.config import load_stage_params
    from synthgap.tracking import StageRun, get_client

    (tmp_path / "params.yaml").write_text("equivalence:\n  base_sizes: [100]\n")
    params = load_stage_params("augment@100", tmp_path / "params.yaml", section="equivalence")
    cell = Cell("closed", 100, 0, 300)
    with StageRun(params, "equivalence", root=tmp_path, metrics_dir=tmp_path) as run:
        with run.child(cell.name, {**cell.params(), "trial": 1}) as child:
            child.log_metrics({"accuracy": 88.5})
    logged = get_client(run.uri).get_run(child.run_id)
    assert logged.data.params == {"setting": "closed", "n_base": "100", "n_real_added": "0", "n_syn_added": "300", "trial": "1"}
    assert logged.data.metrics == {"accuracy": 88.5} and logged.data.tags["mlflow.parentRunId"] == run.run_id


def test_open_set_pools_load_from_npz_and_image_folders(tmp_path):
    from PIL import Image

    from synthgap.equivalence.grid import load_pool
    from synthgap.errors import UserError

    np.savez(tmp_path / "pool.npz", x_train=np.zeros((6, 8, 8, 3), np.uint8), y_train=np.arange(6) % 3)
    x, y = load_pool(tmp_path / "pool.npz", "npz", 3)
    assert x.shape == (6, 8, 8, 3) and y.tolist() == [0, 1, 2, 0, 1, 2]
    for c in ("cat", "dog"):
        (tmp_path / "folder" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "folder" / c / "0.png")
    x, y = load_pool(tmp_path / "folder", "imagefolder", 2, ("cat", "dog"))
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [0, 1]
    _, y = load_pool(tmp_path / "folder", "imagefolder", 2, ("dog", "cat"))
    assert y.tolist() == [1, 0]  # labels follow the dataset's class order, not the folders' sorted order
    with pytest.raises(UserError, match="labels up to 2"):
        load_pool(tmp_path / "pool.npz", "npz", 2)
    with pytest.raises(UserError, match="not found"):
        load_pool(tmp_path / "missing.npz", "npz", 3)


def test_synthetic_picks_are_redrawn_per_trial_and_real_picks_keep_their_rule():
    from synthgap.data.splits import proportional_subset
    from synthgap.seeding import derive_seed, trial_seed

    y = np.repeat(np.arange(4), 50)
    x = np.arange(200, dtype=np.int64).reshape(-1, 1, 1, 1)  # image i holds i
    base = np.arange(0, 200, 10)
    pools = {"open": (np.arange(1000, 1400, dtype=np.int64).reshape(-1, 1, 1, 1), np.tile(np.arange(4), 100))}
    syn = Cell("open", 20, 0, 40)
    first = cell_training_set(syn, x, y, base, pools, 4, trial_seed(3, 0))[0][20:].ravel()
    second = cell_training_set(syn, x, y, base, pools, 4, trial_seed(3, 1))[0][20:].ravel()
    assert set(first) != set(second)  # another trial: other synthetic images
    again = cell_training_set(syn, x, y, base, pools, 4, trial_seed(3, 0))[0][20:].ravel()
    np.testing.assert_array_equal(first, again)  # the same trial again: the same images
    # real picks: class-proportional from outside the base, seeded by (trial seed, "real", n_base) as before
    seed = trial_seed(3, 1)
    real = cell_training_set(Cell("real", 20, 40, 0), x, y, base, pools, 4, seed)[0][20:].ravel()
    rest = np.setdiff1d(np.arange(200), base)
    np.testing.assert_array_equal(real, rest[proportional_subset(y[rest], 40, derive_seed(seed, "real", 20))])


def image_folder(root, names, per_class=1):
    from PIL import Image

    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_open_set_folders_must_be_the_datasets_classes(tmp_path):
    from synthgap.equivalence.grid import load_pool
    from synthgap.errors import UserError

    cifar = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    cifake = image_folder(tmp_path / "cifake" / "train", ("FAKE", "REAL"))
    with pytest.raises(UserError, match="CIFAKE.*no labels of the dataset's classes.*cannot be used as a labelled open-set pool"):
        load_pool(cifake, "imagefolder", 10, cifar)
    odd = image_folder(tmp_path / "odd", ("cat", "dog", "lion"))
    with pytest.raises(UserError, match=r"\['lion'\] are not dataset classes and \['bird'\] are missing"):
        load_pool(odd, "imagefolder", 3, ("cat", "dog", "bird"))


def test_grid_drops_are_listed_before_training_and_an_empty_fit_is_refused():
    from synthgap.equivalence.grid import check_real_cells, dropped_line
    from synthgap.errors import UserError

    # 400 training images: n_base 300 fits no real ratio; 0.001 x 100 rounds to 0; 1.004 x 100 repeats 1.0
    cells, dropped = grid_cells(300, 400, {"real": (0.5, 1.0), "closed": (1.0, 1.001)}, ("closed",))
    assert [c.name for c in cells] == ["real+0", "closed+300"]
    assert [(d["setting"], d["ratio"]) for d in dropped] == [("real", 0.5), ("real", 1.0), ("closed", 1.001)]
    line = dropped_line("augment@300", dropped[0])
    assert line == "augment@300: warning: n_base 300, setting real, ratio 0.5: cell dropped (n_base + 150 = 450 exceeds the 400 training images)"
    _, dropped = grid_cells(100, 400, {"real": (0.001, 1.0, 1.004)}, ())
    assert [(d["ratio"], d["added"]) for d in dropped] == [(0.001, 0), (1.004, 100)]
    real = {"real": (0.5, 1.0)}
    grids = {b: grid_cells(b, 400, real, ())[0] for b in (100, 300)}
    assert check_real_cells(grids, 400) == [300]  # 300 warned and left out of the fit
    with pytest.raises(UserError, match="no base size.*400 training images"):
        check_real_cells({b: grid_cells(b, 400, real, ())[0] for b in (300, 350)}, 400)


def test_a_pool_too_small_for_the_grid_is_a_user_error_naming_sizes_and_key():
    from synthgap.equivalence.grid import check_pool_sizes
    from synthgap.errors import UserError

    cells, _ = grid_cells(100, 1000, {"real": (), "open": (1, 2)}, ("open",))
    check_pool_sizes(cells, {"open": (None, np.zeros(200))})
    with pytest.raises(UserError, match=r"open synthetic pool holds 150 images but n_base 100 at ratio 2 needs 200.*equivalence.open_set \(a bigger pool\)"):
        check_pool_sizes(cells, {"open": (None, np.zeros(150))})


def test_ratios_differ_per_base_and_setting_and_a_base_without_real_cells_is_left_out_of_the_fit():
    """equivalence.ratios_by_base replaces real_ratios / syn_ratios for its base size only, setting by setting;
    an empty real list gives a base with synthetic cells only, which check_real_cells names."""
    from synthgap.config import EquivalenceConfig
    from synthgap.equivalence.grid import check_real_cells
    from synthgap.errors import UserError

    cfg = EquivalenceConfig(base_sizes=(100, 300), real_ratios=(0.5, 1.0), syn_ratios=(1, 2),
                            ratios_by_base=({"n_base": 300, "real": (), "open": (0.4,)},))
    assert [cfg.ratios(100, s) for s in ("real", "closed", "open")] == [(0.5, 1.0), (1, 2), (1, 2)]
    assert [cfg.ratios(300, s) for s in ("real", "closed", "open")] == [(), (1, 2), (0.4,)]
    grids = {b: grid_cells(b, 10_000, {s: cfg.ratios(b, s) for s in ("real", "closed", "open")}, ("closed", "open"))[0]
             for b in cfg.base_sizes}
    assert [c.name for c in grids[300]] == ["real+0", "closed+300", "closed+600", "open+120"]
    assert [c.name for c in grids[100]] == ["real+0", "real+50", "real+100", "closed+100", "closed+200", "open+100", "open+200"]
    assert check_real_cells(grids, 10_000) == [300]
    with pytest.raises(UserError, match="no base size"):  # the given cells are the ones checked
        check_real_cells({300: grids[300]}, 10_000)


@pytest.mark.parametrize("entry, message", [
    ({"n_base": 200, "real": (1,)}, "ratios_by_base names n_base 200, which is not in base_sizes"),
    ({"n_base": 100, "closed": ()}, "closed"),
    ({"n_base": 100, "open": (0.0,)}, "each ratio must be positive"),
])
def test_a_bad_ratios_by_base_entry_is_refused(entry, message):
    from pydantic import ValidationError

    from synthgap.config import EquivalenceConfig

    with pytest.raises(ValidationError, match=message):
        EquivalenceConfig(base_sizes=(100, 300), ratios_by_base=(entry,))
    with pytest.raises(ValidationError, match="names n_base 100 twice"):
        EquivalenceConfig(base_sizes=(100, 300), ratios_by_base=({"n_base": 100}, {"n_base": 100}))


def test_the_open_set_pool_comes_from_the_source_params_name(tmp_path):
    from synthgap.config import OpenSetConfig
    from synthgap.equivalence.grid import open_pool_source
    from synthgap.errors import UserError

    stand_in = tmp_path / "synthesize_realfake" / "base_txt2img.npz"
    assert open_pool_source(OpenSetConfig(source="none"), stand_in, tmp_path) is None
    own = OpenSetConfig(source="path", path="pools/sd", format="imagefolder")
    assert open_pool_source(own, stand_in, tmp_path) == (tmp_path / "pools" / "sd", "imagefolder")
    with pytest.raises(UserError, match=r"base_txt2img.npz \(the open-set pool\) is missing.*realfake.ablation"):
        open_pool_source(OpenSetConfig(source="stand_in"), stand_in, tmp_path)
    stand_in.parent.mkdir()
    stand_in.write_bytes(b"")
    assert open_pool_source(OpenSetConfig(source="stand_in"), stand_in, tmp_path) == (stand_in, "npz")


@pytest.mark.parametrize("fields", [{"source": "path"}, {"source": "stand_in", "path": "pools/sd"}])
def test_open_set_path_goes_with_source_path_only(fields):
    from pydantic import ValidationError

    from synthgap.config import OpenSetConfig

    with pytest.raises(ValidationError, match="path is read with source: path and only then"):
        OpenSetConfig(**fields)


def test_an_npz_pool_with_other_class_names_is_refused(tmp_path):
    from synthgap.equivalence.grid import load_pool
    from synthgap.errors import UserError

    x, y = np.zeros((4, 8, 8, 1), np.uint8), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "pool.npz", x_train=x, y_train=y, class_names=np.array(["cat", "dog"]))
    assert load_pool(tmp_path / "pool.npz", "npz", 2, ("cat", "dog"))[1].tolist() == [0, 1, 0, 1]
    with pytest.raises(UserError, match=r"names its classes \['cat', 'dog'\], not the dataset's \['dog', 'cat'\]"):
        load_pool(tmp_path / "pool.npz", "npz", 2, ("dog", "cat"))


def test_the_synthetic_pools_are_the_closed_pool_and_the_open_source_both_checked_against_the_classes(tmp_path):
    from types import SimpleNamespace

    from synthgap.config import EquivalenceConfig
    from synthgap.equivalence.grid import synthetic_pools
    from synthgap.errors import UserError

    data = SimpleNamespace(num_classes=2, classes=("cat", "dog"))
    x = np.zeros((4, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "closed.npz", x_train=x, y_train=np.array([0, 1, 0, 1]), class_names=np.array(["cat", "dog"]))
    (tmp_path / "sets").mkdir()
    np.savez(tmp_path / "sets" / "base_txt2img.npz", x_train=x[:3], y_train=np.array([1, 1, 0]))
    closed_only = EquivalenceConfig(open_set={"source": "none"})
    pools = synthetic_pools(closed_only, tmp_path / "closed.npz", tmp_path / "sets", data, tmp_path)
    assert list(pools) == ["closed"] and pools["closed"][1].tolist() == [0, 1, 0, 1]
    both = synthetic_pools(EquivalenceConfig(open_set={"source": "stand_in"}), tmp_path / "closed.npz", tmp_path / "sets", data, tmp_path)
    assert list(both) == ["closed", "open"] and both["open"][1].tolist() == [1, 1, 0]
    with pytest.raises(UserError, match=r"closed.npz names its classes \['cat', 'dog'\], not the dataset's"):
        synthetic_pools(closed_only, tmp_path / "closed.npz", tmp_path / "sets", SimpleNamespace(num_classes=2, classes=("a", "b")), tmp_path)


def test_the_equivalence_recipe_drops_the_learning_rate_at_half_and_three_quarters():
    from synthgap.config import EquivalenceConfig

    cfg = EquivalenceConfig()
    assert [cfg.train_recipe(e).milestones for e in (480, 8, 3, 1)] == [(240, 360), (4, 6), (1, 2), ()]
    assert cfg.train_recipe(8).epochs == 8 and cfg.train_recipe(8).lr == cfg.classifier.train.lr
