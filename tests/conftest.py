"""Shared fixtures: small fabricated data and fast training settings."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads OpenMP, which reads it once: idle OpenMP threads sleep instead of spinning. Two xdist
# workers and the stage processes some tests start share two cores; spinning threads take the cores from
# busy ones (tests/stages/test_chains.py with test_realfake.py, -n 2: 89-131 s spinning, 77-84 s with
# OMP_WAIT_POLICY=PASSIVE in the environment, 94-102 s set here; the clean-clone suite 610 s -> 325 s). Not for
# the pipeline: a stage alone with all cores is twice as slow with it (augment@100: 21-23 s -> 40-46 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from synthgap.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

# pytest-xdist's workers share the cores: each worker, the stages it runs in-process (synthgap.runtime.share_cores
# reads SYNTHGAP_THREADS) and the subprocesses it starts (OpenMP reads OMP_NUM_THREADS) get cores / workers threads.
# Two workers with two threads each on two cores ran the suite about twice as slowly.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_THREADS = max(1, min(2, _CORES) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
if "_SYNTHGAP_TEST_THREADS" in os.environ and os.environ["_SYNTHGAP_TEST_THREADS"] == os.environ.get("SYNTHGAP_THREADS"):
    # set by this file in the xdist controller, which does not know the worker count: each worker sets its own
    for name in ("SYNTHGAP_THREADS", "OMP_NUM_THREADS", "_SYNTHGAP_TEST_THREADS"):
        if os.environ.get(name) == os.environ["_SYNTHGAP_TEST_THREADS"] or name == "_SYNTHGAP_TEST_THREADS":
            os.environ.pop(name)
if "SYNTHGAP_THREADS" not in os.environ:  # a value the user set is kept
    os.environ["SYNTHGAP_THREADS"] = os.environ["_SYNTHGAP_TEST_THREADS"] = str(_THREADS)
os.environ.setdefault("OMP_NUM_THREADS", os.environ["SYNTHGAP_THREADS"])
torch.set_num_threads(int(os.environ["SYNTHGAP_THREADS"]))


@pytest.fixture
def fast_train() -> TrainConfig:
    """A few epochs, constant lr, no augmentation, fp32: for behaviour tests that must run in seconds."""
    return TrainConfig(
        epochs=3, batch_size=32, lr=0.05, schedule="constant", milestones=(), crop_padding=0, flip=False,
        weight_decay=0.0, precision="fp32",
    )


def separable_images(n_per_class: int, num_classes: int = 4, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class c lights up horizontal band c of the image, plus noise: linearly separable uint8 NHWC data."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = rng.integers(0, 60, size=(len(y), size, size, 1)).astype(np.uint8)
    band = size // num_classes
    for c in range(num_classes):
        x[y == c, c * band : (c + 1) * band] = 220
    perm = rng.permutation(len(y))
    return x[perm], y[perm].astype(np.int64)
