"""Resumable training state and EMA shared by the training loops.

A state file holds a ``fingerprint`` (the settings that define the run) next to the objects' state dicts;
it is only resumed when the fingerprint matches exactly, so a run with other settings starts fresh.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthgap.checkpoint import load_torch, save_torch


def load_state(path: Path | None, fingerprint: dict, device: torch.device | str) -> dict | None:
    if path is None or not path.is_file():
        return None
    state = load_torch(path, device, fix=f"delete {path} to start over")
    return state if state.get("fingerprint") == fingerprint else None


def save_state(path: Path, fingerprint: dict, **items) -> None:
    """Atomically write ``items`` (modules and optimizers are stored as their state dicts)."""
    payload = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in items.items()}
    save_torch({"fingerprint": fingerprint, **payload}, path)


def restore(state: dict, **modules) -> None:
    for key, module in modules.items():
        module.load_state_dict(state[key])


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers()):
        target.copy_(source)
