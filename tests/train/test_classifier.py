import math

import numpy as np
import pytest
import torch

from synthgap.config import TrainConfig
from synthgap.errors import UserError
from synthgap.models import ClassifierSpec, build_classifier
from synthgap.train.classifier import lr_factor, make_optimizer, to_device_tensors, train_classifier
from synthgap.train.state import state_file
from tests.conftest import separable_images


def tiny_model(num_classes=4, seed=0, width=4):
    torch.manual_seed(seed)
    return build_classifier(ClassifierSpec("resnet20", num_classes, 1, 8, width=width, mean=(0.3,), std=(0.3,)))


def test_loss_falls_when_overfitting_one_batch(fast_train):
    x, y = to_device_tensors(*separable_images(8), "cpu")
    cfg = fast_train.model_copy(update={"epochs": 30, "batch_size": 32})
    result = train_classifier(tiny_model(), (x, y), cfg, seed=0, device="cpu")
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.2 * losses[0]
    assert result.history[-1]["train_top1"] == 100.0


def test_same_seed_same_weights_other_seed_other_weights(fast_train):
    data = to_device_tensors(*separable_images(16), "cpu")
    runs = []
    for seed in (0, 0, 1):
        model = tiny_model()
        train_classifier(model, data, fast_train.model_copy(update={"crop_padding": 1, "flip": True}), seed=seed, device="cpu")
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_near_perfect_on_separable_data_and_near_chance_on_shuffled_labels(fast_train):
    x, y = separable_images(40, num_classes=10, size=10, seed=0)
    test = to_device_tensors(*separable_images(30, num_classes=10, size=10, seed=1), "cpu")
    cfg = fast_train.model_copy(update={"epochs": 8})

    def model():
        torch.manual_seed(0)
        return build_classifier(ClassifierSpec("resnet20", 10, 1, 10, width=4, mean=(0.3,), std=(0.3,)))

    good = train_classifier(model(), to_device_tensors(x, y, "cpu"), cfg, seed=0, device="cpu", evals={"test": test})
    assert good.final["test_top1"] >= 97.0
    shuffled = np.random.default_rng(0).permutation(y)
    bad = train_classifier(model(), to_device_tensors(x, shuffled, "cpu"), cfg, seed=0, device="cpu", evals={"test": test})
    assert bad.final["test_top1"] <= 25.0  # chance is 10 %


def test_training_set_can_be_replaced_every_epoch(fast_train):
    calls = []
    sets = [to_device_tensors(*separable_images(8, seed=s), "cpu") for s in range(3)]

    def provider(epoch):
        calls.append(epoch)
        return sets[epoch]

    result = train_classifier(tiny_model(), provider, fast_train, seed=0, device="cpu")
    assert calls == [0, 1, 2] and len(result.history) == 3


def test_killed_run_resumes_to_the_same_weights(tmp_path, fast_train):
    data = to_device_tensors(*separable_images(16), "cpu")
    cfg = fast_train.model_copy(update={"epochs": 5, "checkpoint_every": 1, "crop_padding": 1, "flip": True, "schedule": "cosine"})
    reference = tiny_model()
    full = train_classifier(reference, data, cfg, seed=3, device="cpu")

    state = tmp_path / "state.pt"

    def crash_after_three(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(tiny_model(), data, cfg, seed=3, device="cpu", state_path=state, on_epoch=crash_after_three)
    assert state.is_file()
    resumed_model = tiny_model(seed=99)  # a fresh process would start from other weights
    resumed = train_classifier(resumed_model, data, cfg, seed=3, device="cpu", state_path=state)
    assert resumed.resumed_from == 2  # state of epoch 2 was the last written before the crash in epoch 3
    assert all(torch.equal(v, resumed_model.state_dict()[k]) for k, v in reference.state_dict().items())
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert not state.exists()  # a finished run removes its state


def test_state_from_other_settings_is_not_resumed(tmp_path, fast_train):
    data = to_device_tensors(*separable_images(8), "cpu")
    state = tmp_path / "state.pt"
    cfg = fast_train.model_copy(update={"epochs": 3, "checkpoint_every": 1})
    with pytest.raises(KeyboardInterrupt):
        train_classifier(tiny_model(), data, cfg, seed=0, device="cpu", state_path=state,
                         on_epoch=lambda r: (_ for _ in ()).throw(KeyboardInterrupt) if r["epoch"] == 2 else None)
    result = train_classifier(tiny_model(), data, cfg, seed=1, device="cpu", state_path=state)
    assert result.resumed_from == 0


def test_non_finite_loss_stops_with_the_epoch(fast_train):
    x, y = to_device_tensors(*separable_images(8), "cpu")
    model = tiny_model()
    with torch.no_grad():
        model.backbone.head.bias[0] = float("nan")
    with pytest.raises(UserError, match=r"diverged \(non-finite loss\) in epoch 1"):
        train_classifier(model, (x, y), fast_train, seed=0, device="cpu")


def test_lr_schedules():
    multi = TrainConfig(epochs=100)
    assert lr_factor(multi, 59, 0.9) == 1.0 and lr_factor(multi, 60, 0) == pytest.approx(0.1)
    assert lr_factor(multi, 85, 0) == pytest.approx(0.01)
    cosine = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=2)
    assert lr_factor(cosine, 0, 0.5) == pytest.approx(0.25 * 0.5 * (1 + math.cos(math.pi * 0.05)))
    assert lr_factor(cosine, 9, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_state_file_is_per_params(tmp_path):
    a = state_file(tmp_path, "s", {"seed": 0})
    assert a == state_file(tmp_path, "s", {"seed": 0}) != state_file(tmp_path, "s", {"seed": 1})
    assert a.parent == tmp_path / ".synthgap" / "state"


@pytest.mark.parametrize("optimizer,expected", [
    # by hand, p0 = 1, gradient 3 in both steps, lr 0.1 then 0.05, momentum 0.9 Nesterov, weight decay 0.01:
    # sgdw: p1 = 1 * 0.99 - 0.1 * (3 + 0.9 * 3) = 0.42; buf = 0.9 * 3 + 3 = 5.7,
    #       p2 = 0.42 * 0.99 - 0.05 * (3 + 0.9 * 5.7) = 0.4158 - 0.4065 = 0.0093 (the decay ignores the lr drop)
    ("sgdw", 0.0093),
    # sgd: g1 = 3 + 0.01 * 1 = 3.01, p1 = 1 - 0.1 * 3.01 * 1.9 = 0.4281; g2 = 3 + 0.01 * 0.4281 = 3.004281,
    #      buf = 0.9 * 3.01 + g2 = 5.713281, p2 = 0.4281 - 0.05 * (g2 + 0.9 * buf) = 0.020788305
    ("sgd", 0.020788305),
])
def test_optimizer_two_steps_on_a_scalar(optimizer, expected):
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    cfg = TrainConfig(optimizer=optimizer, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    opt = make_optimizer([p], cfg, torch.device("cpu"))
    for lr in (0.1, 0.05):
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor([3.0], dtype=torch.float64)
        opt.step()
    assert p.item() == pytest.approx(expected, abs=1e-12)


def rise_then_fall():
    """Training data whose labels turn wrong (c -> c + 1) from epoch 3 on: val accuracy rises, then falls."""
    x, y = to_device_tensors(*separable_images(16), "cpu")
    evals = {"val": to_device_tensors(*separable_images(4, seed=5), "cpu")}
    return (lambda epoch: (x, y if epoch < 3 else (y + 1) % 4)), evals


def test_restore_best_ends_with_the_best_val_epoch(fast_train):
    data, evals = rise_then_fall()
    cfg = fast_train.model_copy(update={"epochs": 5, "lr": 0.1, "restore_best": True})
    result = train_classifier(tiny_model(), data, cfg, seed=0, device="cpu", evals=evals, eval_every_epoch=False)
    history = [r["val_top1"] for r in result.history]
    assert result.best_epoch == 1 + history.index(max(history)) < cfg.epochs  # the first best, not the last epoch
    assert result.final["val_top1"] == max(history) > history[-1]
    plain = train_classifier(tiny_model(), data, cfg.model_copy(update={"restore_best": False}), seed=0, device="cpu",
                             evals=evals)
    assert plain.best_epoch is None and plain.final["val_top1"] == history[-1]


def test_restore_best_resumes_with_its_best_weights(tmp_path, fast_train):
    data, evals = rise_then_fall()
    cfg = fast_train.model_copy(update={"epochs": 5, "lr": 0.1, "restore_best": True, "checkpoint_every": 1})
    full = train_classifier(tiny_model(), data, cfg, seed=0, device="cpu", evals=evals)
    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_classifier(tiny_model(), data, cfg, seed=0, device="cpu", evals=evals, state_path=state,
                         on_epoch=lambda r: (_ for _ in ()).throw(KeyboardInterrupt) if r["epoch"] == 5 else None)
    resumed = train_classifier(tiny_model(seed=9), data, cfg, seed=0, device="cpu", evals=evals, state_path=state)
    assert resumed.resumed_from == 4 and resumed.best_epoch == full.best_epoch < 4  # best weights from the file
    assert resumed.final == full.final


def test_restore_best_without_a_val_split_is_a_user_error(fast_train):
    data = to_device_tensors(*separable_images(8), "cpu")
    with pytest.raises(UserError, match="restore_best needs a val split"):
        train_classifier(tiny_model(), data, fast_train.model_copy(update={"restore_best": True}), seed=0, device="cpu",
                         evals={"test": data})
