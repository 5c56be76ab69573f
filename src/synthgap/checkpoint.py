"""Weights-only torch files: atomic saves, safe loads, one clear error for a broken file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from synthgap.errors import UserError
from synthgap.paths import atomic_write_with


def save_torch(obj: Any, path: Path) -> None:
    """Save tensors, numbers, strings, lists and dicts (never code) to ``path`` atomically. The bytes depend
    only on ``obj`` (through a file handle torch names the zip's folder ``archive``, not after the temporary
    file), so an identical rerun writes an identical file."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    atomic_write_with(path, write)


def load_torch(path: Path, map_location: str | torch.device = "cpu", fix: str = "delete it and rerun the stage") -> Any:
    """``torch.load(..., weights_only=True)`` with a broken or foreign file reported as a UserError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable synthgap checkpoint ({detail[:200]})", fix) from err
