"""Resumable training state and EMA shared by the training loops.

A state file holds a ``fingerprint`` (the settings that define the run) next to the objects' state dicts;
it is only resumed when the fingerprint matches exactly, so a run with other settings starts fresh. The
state is stored as its serialized bytes next to their sha256, and the digest is checked before anything is
resumed: a file that was damaged on disk (torch's zip may still parse one) is refused, never resumed with
other weights.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from synthgap.checkpoint import load_torch, save_torch
from synthgap.errors import UserError
from synthgap.seeding import derive_seed


def load_state(path: Path | None, fingerprint: dict, device: torch.device | str) -> dict | None:
    """The state saved at ``path`` if it exists and was saved with ``fingerprint``, else None; a file that
    fails its checksum is a UserError (deleting it starts the training over)."""
    if path is None or not path.is_file():
        return None
    fix = "delete it to start this training over"
    try:
        box = load_torch(path, "cpu", fix=fix)
    except UserError:
        box = None
    data = box.get("state") if isinstance(box, dict) else None
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or _digest(data) != box.get("sha256"):
        raise UserError(f"{path} fails its checksum (corrupt or partly written)", fix)
    state = torch.load(io.BytesIO(data.numpy()), map_location=device, weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None


def save_state(path: Path, fingerprint: dict, **items) -> None:
    """Atomically write ``items`` (modules and optimizers are stored as their state dicts) with a checksum."""
    payload = {k: v.state_dict() if hasattr(v, "state_dict") else v for k, v in items.items()}
    buffer = io.BytesIO()
    torch.save({"fingerprint": fingerprint, **payload}, buffer)
    data = torch.frombuffer(buffer.getbuffer(), dtype=torch.uint8)
    save_torch({"sha256": _digest(data), "state": data}, path)


def _digest(data: torch.Tensor) -> str:
    return hashlib.sha256(data.contiguous().numpy()).hexdigest()


def restore(state: dict, **modules) -> None:
    for key, module in modules.items():
        module.load_state_dict(state[key])


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, *, average_buffers: bool = False) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters, and for floating-point buffers (batch-norm
    statistics, spectral-norm vectors) with ``average_buffers``; other buffers are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers()):
        if average_buffers and target.is_floating_point():
            target.lerp_(source, 1.0 - decay)
        else:
            target.copy_(source)


def result_params(params: dict) -> dict:
    """The params that define a stage's result, the key of its resumable state: ``tracking.*`` (where runs
    are logged) is dropped and ``device`` becomes the type of device it resolves to (``auto`` on a machine
    without a GPU is ``cpu``; ``cuda:1`` is ``cuda``)."""
    from synthgap.runtime import resolve_device

    kept = {k: v for k, v in params.items() if k != "tracking" and not k.startswith("tracking.")}
    if "device" in kept:
        kept["device"] = resolve_device(str(kept["device"])).type
    return kept


def state_file(root: Path, stage: str, params: dict) -> Path:
    """Where a stage keeps its resumable training state: under the repository root (outside DVC's outputs,
    which DVC deletes before it reruns a stage), one file per stage and distinct :func:`result_params` of
    ``params`` (``StageParams.flat()`` or any dict of the settings that define the run), so parallel
    experiments never share one and a change that cannot alter the result (the MLflow URI, ``auto`` vs
    ``cpu``) keeps resuming. A stage deletes its state when it finishes; a file left by a killed run whose
    settings were then changed stays in ``.synthgap/state/`` until it is deleted by hand."""
    key = derive_seed(stage, sorted((k, str(v)) for k, v in result_params(params).items()))
    return state_folder(root) / f"{stage}-{key:016x}.pt"


def state_folder(root: Path) -> Path:
    return root / ".synthgap" / "state"


def saved_states(root: Path, stage: str) -> list[Path]:
    """The resumable state files of ``stage`` that exist now (what a rerun of the stage resumes from)."""
    folder = state_folder(root)
    if not stage or not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{stage}-*") if p.is_file() and not p.name.startswith("."))
