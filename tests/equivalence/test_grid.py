import numpy as np
import pytest

from synthgap.equivalence.grid import Cell, balanced_prefix, cell_training_set, epochs_for, grid_cells


def test_grid_cells_and_skipped_real_ratios():
    cells, skipped = grid_cells(100, 250, (0.5, 1.0, 2.0), (1, 2), ("closed",))
    assert skipped == [2.0]
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
    x, y = load_pool(tmp_path / "folder", "imagefolder", 2)
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [0, 1]
    with pytest.raises(UserError, match="labels up to 2"):
        load_pool(tmp_path / "pool.npz", "npz", 2)
    with pytest.raises(UserError, match="not found"):
        load_pool(tmp_path / "missing.npz", "npz", 3)
