"""Seeds derived from structured keys, so every random stream is reproducible on its own.

``derive_seed(run_seed, "epoch", 7)`` gives the same integer in every process and on every machine, which
makes per-epoch augmentation, per-image generator noise and dataset regeneration independent of batch size,
of where a run was resumed and of how work was split across processes.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any sequence of ints and strings (stable across Python versions and processes)."""
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (for third-party code that uses them)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def trial_seed(run_seed: int, trial: int) -> int:
    """The seed of trial ``trial``: the one seed rule of every result-producing stage.

    It depends on the run seed and the trial index only, not on the cell, so the two sides of a paired
    comparison (filtered vs unfiltered, GaFi vs Baseline, real vs synthetic additions) share classifier
    initialisation, data order and augmentation in each trial; everything random inside a cell derives from
    it with a purpose key (``derive_seed(trial_seed, "init")``, ``"epoch"``, ``"recycle"``, ...).
    """
    return derive_seed(run_seed, "trial", trial)
