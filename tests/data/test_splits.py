import numpy as np
import pytest

from synthgap.data.processed import build_processed, load_processed, save_processed
from synthgap.data.sources import ImageDataset
from synthgap.data.splits import class_quotas, proportional_subset, stratified_split
from synthgap.errors import UserError

LABELS = np.repeat(np.arange(4), [50, 30, 15, 5])  # imbalanced, like DermaMNIST


def test_quotas_are_proportional_sum_exactly_and_keep_every_class():
    np.testing.assert_array_equal(class_quotas(LABELS, 4), [1, 1, 1, 1])
    for size in (4, 10, 37, 100):
        quota = class_quotas(LABELS, size)
        assert quota.sum() == size and quota.min() >= 1
        assert np.all(quota <= np.bincount(LABELS))
    np.testing.assert_array_equal(class_quotas(LABELS, 50), [25, 15, 8, 2])


def test_subset_sizes_out_of_range_are_user_errors():
    with pytest.raises(UserError, match="smaller than the number of classes"):
        class_quotas(LABELS, 3)
    with pytest.raises(UserError, match="larger than the training split"):
        class_quotas(LABELS, 101)


def test_subsets_are_deterministic_and_grow_by_prefix():
    a, b = proportional_subset(LABELS, 40, seed=1), proportional_subset(LABELS, 40, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, proportional_subset(LABELS, 40, seed=2))
    assert set(proportional_subset(LABELS, 20, 1)) <= set(a)


def test_stratified_split_holds_out_in_class_proportion():
    train, val = stratified_split(LABELS, 20, seed=0)
    assert len(val) == 20 and len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 100
    np.testing.assert_array_equal(np.bincount(LABELS[val]), [10, 6, 3, 1])
    with pytest.raises(UserError, match="val_size"):
        stratified_split(LABELS, 99, seed=0)


def test_processed_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ds = ImageDataset("toy", ("a", "b", "c", "d"), rng.integers(0, 255, (100, 4, 4, 1), dtype=np.uint8), LABELS,
                      np.zeros((8, 4, 4, 1), np.uint8), np.arange(8) % 4)
    data = build_processed(ds, val_size=None, split_seed=3)
    assert len(data.y_val) == 8  # GaFi rule: as many validation images as test images
    save_processed(data, tmp_path)
    back = load_processed(tmp_path)
    np.testing.assert_array_equal(back.x_train, data.x_train)
    assert back.classes == ds.classes and back.split_seed == 3
    assert back.info()["class_counts"]["val"] == [4, 2, 1, 1]
    # base subsets are drawn on demand with the split seed: the same indices after a round trip
    np.testing.assert_array_equal(back.base_subset(20), data.base_subset(20))
    assert len(back.base_subset(20)) == 20 and set(back.base_subset(10)) <= set(back.base_subset(20))
    with pytest.raises(UserError, match="larger than the training split"):
        back.base_subset(1000)


def test_validation_folded_into_train_extends_it_in_order_and_base_subsets_draw_from_both():
    """ProcessedData.with_val_in_train (gafi.gan.merge_train_val, equivalence.merge_train_val): train then
    validation, validation left empty, test untouched; a base subset of the merged split can pick validation
    images and stays class-proportional."""
    from synthgap.data.processed import ProcessedData

    img = lambda n, v: np.full((n, 2, 2, 1), v, np.uint8)  # noqa: E731
    data = ProcessedData("toy", ("a", "b"), img(80, 1), np.repeat([0, 1], 40), img(20, 2), np.repeat([0, 1], 10),
                         img(6, 3), np.zeros(6, np.int64), split_seed=0)
    merged = data.with_val_in_train()
    assert (merged.x_train[:80] == 1).all() and (merged.x_train[80:] == 2).all() and len(merged.y_train) == 100
    assert merged.y_train.tolist() == [0] * 40 + [1] * 40 + [0] * 10 + [1] * 10
    assert len(merged.y_val) == 0 and merged.x_val.shape[1:] == (2, 2, 1) and merged.x_test is data.x_test
    idx = merged.base_subset(100)
    assert sorted(idx.tolist()) == list(range(100))  # the whole merged split: the paper's Large base
    picked = merged.base_subset(50)
    assert np.bincount(merged.y_train[picked]).tolist() == [25, 25] and (picked >= 80).any()
