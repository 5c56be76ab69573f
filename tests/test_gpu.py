"""The claims that only a CUDA device can check: bf16 autocast, fused SGD, channels-last, torch.compile, stacked
training, the accelerate bf16 LoRA step and the benchmarks' ``--device cuda`` runs.

Run on a GPU machine (``benchmarks/device_check.sh`` does, with the benchmarks; README "GPU check"):

    python -m pytest -m gpu -p no:xdist -o addopts=

Every test calls :func:`cuda` first, so without a CUDA device each one FAILS with the reason: a GPU check that
skipped would prove nothing. The default test run deselects them (``-m 'not gpu'`` in pyproject.toml).
Each test takes seconds on an H200 (the compiled step the longest: inductor compiles it cold). Fixed seeds;
fp32 comparisons run with TF32 off, so their tolerances are float rounding, not TF32's 10-bit mantissa.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import synthgap.train.classifier as classifier_module
from synthgap.models import ClassifierSpec, build_classifier
from synthgap.train.classifier import to_device_tensors, train_classifier, train_classifiers
from synthgap.train.optim import SGD
from synthgap.train.precision import autocast_for, channels_last_for, uses_bf16
from tests.conftest import REPO, separable_images
from tests.models.test_stacked import models as stackable_models
from tests.models.test_stacked import sets as stackable_sets

pytestmark = pytest.mark.gpu

CIFAR = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


def cuda() -> torch.device:
    """The device of every test here; without one the calling test fails (never skips)."""
    assert torch.cuda.is_available(), (
        "no CUDA device visible (torch.cuda.is_available() is False): the tests marked gpu must run on a GPU "
        "machine, e.g. `bash benchmarks/device_check.sh` there (README 'GPU check'); they fail, not skip, without one"
    )
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def strict_fp32():
    """fp32 means fp32 in these comparisons: no TF32 in cuDNN convolutions or cuBLAS matmuls."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def resnet20(device, width=64, seed=0):
    torch.manual_seed(seed)
    return build_classifier(ClassifierSpec("resnet20", 10, 3, 32, width=width, **CIFAR)).to(device)


def batch(device, n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen).to(device), torch.randint(0, 10, (n,), generator=gen).to(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||: scale-free, so one bound fits logits, losses and gradients alike."""
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


# ------------------------------------------------------------------------------------------ mixed precision
def test_bf16_autocast_logits_agree_with_fp32():
    device = cuda()
    assert uses_bf16(device, "auto") and channels_last_for(device, "fp32")  # the CUDA policy the loop relies on
    model = resnet20(device)  # train mode: BatchNorm on batch statistics, as in training
    x, _ = batch(device)
    with torch.no_grad():
        ref = model(x)
        with autocast_for(device, "auto"):
            low = model(x)
    assert ref.dtype == torch.float32 and low.dtype == torch.bfloat16  # autocast really ran in bf16
    err = rel_err(low, ref)
    # bf16 keeps 8 mantissa bits (unit rounding 2^-9 = 0.2 %); through 20 layers the logits move 0.5-1 % (CPU
    # autocast, seeds 0-2); a wrong cast (fp16 overflow, a layer left in bf16 state) moves them by far more
    assert 0 < err < 0.04, f"bf16 logits differ from fp32 by {err:.4f} (relative)"
    assert (low.float().argmax(1) == ref.argmax(1)).float().mean() >= 0.9


def test_bf16_and_fp32_training_both_learn_separable_data(fast_train):
    device = cuda()
    x, y = separable_images(64, num_classes=4, size=8, seed=0)
    test = to_device_tensors(*separable_images(32, num_classes=4, size=8, seed=1), device)
    finals = {}
    for precision in ("bf16", "fp32"):
        torch.manual_seed(0)
        model = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=8, mean=(0.3,), std=(0.3,)))
        cfg = fast_train.model_copy(update={"epochs": 4, "precision": precision})
        result = train_classifier(model, to_device_tensors(x, y, device), cfg, seed=0, device=device, evals={"test": test})
        losses = [r["train_loss"] for r in result.history]
        assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0], (precision, losses)
        finals[precision] = result.final["test_top1"]
    assert finals["bf16"] >= 95.0 and finals["fp32"] >= 95.0, finals


# ---------------------------------------------------------------------------------------------- optimizer
def test_fused_sgd_step_equals_foreach_step_and_the_loop_uses_it(monkeypatch, fast_train):
    device = cuda()
    model = resnet20(device, width=16)
    x, y = batch(device)
    F.cross_entropy(model(x), y).backward()
    settings = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    twins = {}
    for impl in ("fused", "foreach"):
        params = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for p, q in zip(params, model.parameters()):
            p.grad = q.grad.clone()
        opt = SGD(params, **settings, **{impl: True})
        for _ in range(3):  # the second and third steps use the momentum buffers
            opt.step()
        twins[impl] = params
    for a, b in zip(twins["fused"], twins["foreach"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(twins["fused"][0], next(model.parameters()))  # the steps moved the weights

    made = []

    def recording_sgd(*args, **kwargs):
        made.append(kwargs)
        return SGD(*args, **kwargs)

    monkeypatch.setattr(classifier_module, "SGD", recording_sgd)
    data = to_device_tensors(*separable_images(16), device)
    tiny = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=4, mean=(0.3,), std=(0.3,)))
    train_classifier(tiny, data, fast_train.model_copy(update={"epochs": 1}), seed=0, device=device)
    assert made and made[0].get("fused") is True, made


# ------------------------------------------------------------------------------------------- memory layout
def test_channels_last_forward_equals_contiguous_and_the_loop_trains_channels_last(fast_train):
    device = cuda()
    model = resnet20(device)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert nhwc.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = batch(device)
    with torch.no_grad():
        ref = model(x)
        out = nhwc(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)

    x8, y8 = separable_images(64, num_classes=4, size=8, seed=0)
    torch.manual_seed(0)
    tiny = build_classifier(ClassifierSpec("resnet20", 4, 1, 8, width=8, mean=(0.3,), std=(0.3,)))
    result = train_classifier(tiny, to_device_tensors(x8, y8, device), fast_train.model_copy(update={"epochs": 4}),
                              seed=0, device=device)
    conv = tiny.backbone.blocks[0].conv1.weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)  # the loop's NHWC path ran
    assert not conv.is_contiguous()  # (a 3x3 NHWC weight is not NCHW-contiguous: the check can tell them apart)
    assert result.history[-1]["train_top1"] >= 90.0, result.history


# ------------------------------------------------------------------------------------------- torch.compile
def test_compiled_training_step_equals_eager():
    """Loss, gradients and BatchNorm statistics of one step under ``torch.compile`` against eager. The gradients
    are judged against a float64 eager step: BatchNorm's backward cancels, so the fp32 gradients of early layers
    carry ~1e-3 relative rounding either way (eager fp32 on a CPU: 0.5-0.9 %); the compiled step must be as
    close to float64 as the eager fp32 step is (a miscompiled one is off by order 1)."""
    device = cuda()
    eager = resnet20(device, width=16).to(memory_format=torch.channels_last)
    exact = copy.deepcopy(eager).double()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    x, y = batch(device)
    x = x.contiguous(memory_format=torch.channels_last)
    losses = []
    for net, inputs in ((eager, x), (compiled, x), (exact, x.double())):
        loss = F.cross_entropy(net(inputs), y)
        loss.backward()
        losses.append(loss.detach().double())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[1], losses[2], rtol=1e-5, atol=1e-6)
    for (name, p), q, r in zip(eager.named_parameters(), twin.parameters(), exact.parameters()):
        assert q.grad is not None, name
        err_eager, err_compiled = rel_err(p.grad, r.grad), rel_err(q.grad, r.grad)
        assert err_compiled <= 3 * err_eager + 1e-4, f"{name}: compiled {err_compiled:.1e}, eager {err_eager:.1e} from float64"
    for (name, a), b in zip(eager.named_buffers(), twin.buffers()):  # BatchNorm running statistics
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------- stacked models
@pytest.mark.parametrize("cfg_update", [{}, {"crop_padding": 1, "flip": True, "cutout": 2, "weight_decay": 5e-4, "lr": 0.01}])
def test_models_trained_together_on_cuda_equal_models_trained_alone(fast_train, cfg_update):
    """tests/models/test_stacked.py's check on CUDA: grouped cuDNN convolutions, fused SGD, channels-last."""
    device = cuda()
    cfg = fast_train.model_copy(update={"epochs": 2, "batch_size": 32, **cfg_update})
    data, seeds = stackable_sets(3), [7, 8, 9]
    test = data[0]
    together = stackable_models(3)
    results = train_classifiers(together, data, cfg, seeds=seeds, device=device, evals={"test": test})
    for j in range(3):
        alone = stackable_models(3)[j]
        ref = train_classifier(alone, data[j], cfg, seed=seeds[j], device=device, evals={"test": test})
        for (name, a), b in zip(together[j].state_dict().items(), alone.state_dict().values()):
            assert a.is_cuda
            if a.is_floating_point():
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)
        for r_together, r_alone in zip(results[j].history, ref.history):
            assert r_together["train_loss"] == pytest.approx(r_alone["train_loss"], rel=1e-4)
            assert abs(r_together["train_top1"] - r_alone["train_top1"]) <= 100 / 96 + 1e-9  # at most one image
        assert abs(results[j].final["test_top1"] - ref.final["test_top1"]) <= 100 / 96 + 1e-9


# --------------------------------------------------------------------------------------- LoRA (accelerate)
def test_lora_finetune_step_in_bf16_through_accelerate(tmp_path):
    from accelerate.state import AcceleratorState
    from sklearn.datasets import load_digits

    from synthgap.realfake.base_model import build_tiny
    from synthgap.realfake.finetune import UnetTraining, train_unet
    from synthgap.realfake.guidance import make_projection
    from synthgap.seeding import derive_seed

    device = cuda()
    digits = load_digits()
    x = torch.from_numpy((digits.images[:64] * 255 / 16).round().astype(np.uint8)).unsqueeze(1)
    model = build_tiny(8, ["photo", "of", "digit", "zero"], tmp_path / "tok", seed=0, width=16, text_width=16)
    frozen = {f"{part}.{k}": v.clone() for part in ("unet", "vae", "text_encoder")
              for k, v in getattr(model, part).state_dict().items()}
    seen_dtypes = []
    hook = model.unet.conv_out.register_forward_hook(lambda module, args, out: seen_dtypes.append(out.dtype))
    tokens = torch.randn(len(x), 12, generator=torch.Generator().manual_seed(0))  # 12 wide: a projection trains
    settings = UnetTraining(steps=60, batch_size=16, lr=1e-2, resolution=8, mixed_precision="bf16")
    AcceleratorState._reset_state(True)  # accelerate keeps one global state; this test sets bf16 on CUDA
    try:
        projection, log = train_unet(model, x, ["photo of digit zero"] * len(x), tokens, settings, seed=1,
                                     device=device, log_every=20)
    finally:
        hook.remove()
        AcceleratorState._reset_state(True)

    assert seen_dtypes and set(seen_dtypes) == {torch.bfloat16}, set(seen_dtypes)  # autocast ran in bf16
    losses = [r["loss"] for r in log]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0], f"the loss did not fall: {losses}"  # 5-12 % lower (CPU, seeds 1-3)
    after = {f"{part}.{k.replace('.base_layer', '')}": v for part in ("unet", "vae", "text_encoder")
             for k, v in getattr(model, part).state_dict().items() if "lora_" not in k}
    assert after.keys() == frozen.keys()
    changed = [k for k in frozen if not torch.equal(after[k].cpu(), frozen[k])]
    assert not changed, f"frozen weights changed: {changed[:5]}"
    lora_b = [v for k, v in model.unet.state_dict().items() if "lora_B" in k]
    assert lora_b and all(v.is_cuda for v in lora_b) and any(v.abs().sum() > 0 for v in lora_b)  # B starts at 0
    start = make_projection(12, 16, derive_seed(1, "projection"))
    assert projection is not None and not torch.equal(projection.weight.detach().cpu(), start.weight)


# ----------------------------------------------------------------------------------------------- benchmarks
QUICK = {  # name -> extra arguments of its CI-sized CUDA run (the full runs are benchmarks/device_check.sh's)
    "classifier": [],
    "stacked": [],
    "sampling": ["--no-sd"],  # SD-1.5 img2img is in the full run
    "recycle": ["--images", "512"],  # --quick shrinks only the CPU run
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """``run(name)`` -> (exit status, stdout, stderr) of ``python -m benchmarks.<name> --device cuda --quick
    --no-save``. The first call starts all four at once (nothing here is timed, so they may share the GPU)."""
    done: dict = {}

    def run(name: str):
        if not done:
            folder = tmp_path_factory.mktemp("bench")
            procs = {}
            for bench, extra in QUICK.items():
                out, err = open(folder / f"{bench}.out", "w"), open(folder / f"{bench}.err", "w")
                cmd = [sys.executable, "-m", f"benchmarks.{bench}", "--device", "cuda", "--quick", "--no-save", *extra]
                procs[bench] = (subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err), out, err)
            for bench, (proc, out, err) in procs.items():
                try:
                    proc.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                out.close()
                err.close()
                done[bench] = (proc.returncode, (folder / f"{bench}.out").read_text(), (folder / f"{bench}.err").read_text())
        return done[name]

    return run


@pytest.mark.parametrize("name", list(QUICK))
def test_benchmark_runs_on_cuda_and_prints_its_json(name, quick_runs):
    cuda()
    code, out, err = quick_runs(name)
    assert code == 0, err[-3000:]
    result = json.loads(out[out.index("{\n"):])
    assert result["benchmark"] == name and result["device_type"] == "cuda", result
    assert "--device cuda" in result["command"] and result["cuda"]
    if name == "classifier":
        assert result["ours_img_per_s"] > 0 and result["baseline_img_per_s"] > 0 and result["peak_matmul_tflops"]["bf16"] > 0
    if name == "sampling":
        assert result["img_per_s"]["gan"] and result["img_per_s"]["edm_18_steps"]
