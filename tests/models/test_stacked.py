"""Stacked training: k models in one grouped network equal the same k models trained alone."""

import numpy as np
import pytest
import torch

from synthgap.models import ClassifierSpec, build_classifier
from synthgap.models.stacked import StackedClassifier, can_stack, unstack
from synthgap.train.classifier import to_device_tensors, train_classifier, train_classifiers
from tests.conftest import separable_images


def models(k, width=4, arch="resnet20", classes=4, shortcut="B"):
    out = []
    for j in range(k):
        torch.manual_seed(100 + j)
        out.append(build_classifier(ClassifierSpec(arch, classes, 1, 8, width=width, mean=(0.2 + 0.1 * j,), std=(0.3,),
                                                   shortcut=shortcut)))
    return out


@pytest.mark.parametrize("shortcut", ["B", "A"])
def test_stacked_forward_equals_each_model(shortcut):
    ms = models(3, shortcut=shortcut)
    stacked = StackedClassifier(ms).eval()
    x = torch.rand(5, 1, 8, 8)
    out = stacked(x.repeat(1, 3, 1, 1))
    assert out.shape == (5, 3, 4)
    for j, m in enumerate(ms):
        torch.testing.assert_close(out[:, j], m.eval()(x), rtol=1e-5, atol=1e-5)


def test_unstack_round_trip_restores_every_tensor():
    ms = models(3)
    stacked = StackedClassifier(ms)
    fresh = models(3)
    for m in fresh:  # scramble, so only unstack can restore them
        for p in m.parameters():
            p.data.zero_()
    unstack(stacked, fresh)
    for a, b in zip(ms, fresh):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sets(k):
    out = []
    for j in range(k):
        x, y = separable_images(24, seed=j)
        out.append(to_device_tensors(x, y, "cpu"))
    return out


@pytest.mark.parametrize("cfg_update,shortcut", [
    ({}, "B"),
    ({"crop_padding": 1, "flip": True, "cutout": 2, "weight_decay": 5e-4, "lr": 0.01}, "B"),
    ({"crop_padding": 1, "flip": True, "erasing": True, "optimizer": "sgdw", "weight_decay": 5e-3, "lr": 0.01,
      "restore_best": True}, "A"),
])
def test_models_trained_together_equal_models_trained_alone(fast_train, cfg_update, shortcut, one_thread):
    # 2 epochs x 3 steps: long enough to exercise momentum, BatchNorm statistics and the per-epoch streams,
    # short and gentle enough (lr 0.01 with augmentation: width-4 nets amplify rounding chaotically at larger
    # steps) that float rounding of grouped vs plain convolutions stays far below the tolerance. One thread:
    # oneDNN splits a convolution's sums differently with more (on an Intel Xeon with AVX-512, two threads
    # moved the weights by up to 1.4e-4 after these six steps, one thread by 1.8e-6).
    cfg = fast_train.model_copy(update={"epochs": 2, "batch_size": 32, **cfg_update})
    data, seeds = sets(3), [7, 8, 9]
    test = data[0]
    evals = {"test": test, "val": (test[0][:40], test[1][:40])}
    together = models(3, shortcut=shortcut)
    results = train_classifiers(together, data, cfg, seeds=seeds, device="cpu", evals=evals)
    for j in range(3):
        alone = models(3, shortcut=shortcut)[j]
        ref = train_classifier(alone, data[j], cfg, seed=seeds[j], device="cpu", evals=evals)
        assert results[j].best_epoch == ref.best_epoch
        for (name, a), b in zip(together[j].state_dict().items(), alone.state_dict().values()):
            if a.is_floating_point():
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        for r_together, r_alone in zip(results[j].history, ref.history):
            assert r_together["train_loss"] == pytest.approx(r_alone["train_loss"], rel=1e-5)
            assert r_together["train_top1"] == r_alone["train_top1"]
            assert r_together["test_top1"] == pytest.approx(r_alone["test_top1"], abs=1e-9)
        assert results[j].final["test_top1"] == ref.final["test_top1"]


def test_each_model_gets_its_own_seed_and_data(fast_train):
    data = sets(2)
    ms = models(2)
    with torch.no_grad():  # identical starting weights: only seed and data can make them differ
        ms[1].load_state_dict(ms[0].state_dict())
    train_classifiers(ms, [data[0], data[0]], fast_train, seeds=[1, 2], device="cpu")
    assert not torch.equal(ms[0].backbone.head.weight, ms[1].backbone.head.weight)


def test_stack_size_one_and_other_archs_train_one_by_one(fast_train):
    assert can_stack(models(2)) and not can_stack(models(1))
    assert not can_stack([*models(1), *models(1, width=8)]) and not can_stack([*models(1), *models(1, shortcut="A")])
    data = sets(2)
    cfg = fast_train.model_copy(update={"epochs": 1, "stack": 1})
    ms = models(2)
    results = train_classifiers(ms, data, cfg, seeds=[1, 2], device="cpu")
    assert len(results) == 2 and all(len(r.history) == 1 for r in results)


def test_training_sets_of_different_sizes_are_refused(fast_train):
    data = sets(2)
    data[1] = (data[1][0][:50], data[1][1][:50])
    with pytest.raises(ValueError, match="one size"):
        train_classifiers(models(2), data, fast_train, seeds=[1, 2], device="cpu")
