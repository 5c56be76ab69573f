"""Data parallelism on ``torch.distributed`` (``torchrun`` / ``accelerate launch``), the same for every loop.

Semantics: one process per device, each holding the full (device-resident) training set. Every process draws
the same global batch from the same seeded generator, applies the same augmentation to all of it, and keeps
its slice ``rank::world``; DDP averages the gradients, so a step equals the single-process step on the global
batch (up to BatchNorm, whose statistics stay per process on CPU/gloo; ``SyncBatchNorm`` on CUDA). Rank 0
alone writes files and logs to MLflow. Synthesis shards images ``rank::world`` (every image has its own seed)
and gathers them back in order, so the union equals the single-process set.

Without a launcher (no ``WORLD_SIZE`` > 1) everything here is a no-op: rank 0 of 1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """This process's share (``rank::world``) of a global batch."""
        return t[self.rank :: self.world] if self.world > 1 else t


def _group():
    """``torch.distributed`` when this process is in a process group, else None. Torch itself is not loaded
    for the question: where it is not loaded yet there is no group (a report stage never loads it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed
    return None


def current() -> Dist:
    """This process's place in the process group; rank 0 of 1 before (or without) one."""
    group = _group()
    return Dist(group.get_rank(), group.get_world_size()) if group is not None else Dist()


def is_main() -> bool:
    """False on every process but rank 0 of a launched job (also before the process group exists)."""
    if _group() is not None:
        return current().main
    return int(os.environ.get("RANK", 0)) == 0


def setup(device: torch.device) -> Dist:
    """Join the process group a launcher describes (``WORLD_SIZE`` > 1): NCCL on CUDA (one GPU per
    ``LOCAL_RANK``), gloo on CPU. Returns this process's place."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return current()


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this process (``LOCAL_RANK``) when launched on several GPUs."""
    import torch

    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` in a process group (SyncBatchNorm on CUDA), the model itself otherwise."""
    import torch

    dist = current()
    if dist.world == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written what the others read next)."""
    import torch

    if current().world > 1:
        torch.distributed.barrier()


def sync_buffers(model: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm running statistics drift apart per process)."""
    import torch

    if current().world > 1:
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def all_sum(t: torch.Tensor, op: str = "SUM") -> torch.Tensor:
    """Reduce over processes (``op``: SUM for logging totals, MAX, ...); identity in one process."""
    import torch

    if current().world > 1:
        t = t.clone()
        torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op))
    return t


def gather_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """Reassemble ``rank::world`` shards of ``total`` items into the original order on every process."""
    import torch

    dist = current()
    if dist.world == 1:
        return local
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for r, part in enumerate(gather_variable(local)):
        out[r :: dist.world] = part
    return out


def gather_variable(local: torch.Tensor) -> list[torch.Tensor]:
    """Every process's ``local`` tensor (lengths may differ), in rank order, on every process."""
    import torch

    dist = current()
    if dist.world == 1:
        return [local]
    sizes = [torch.zeros((), dtype=torch.long, device=local.device) for _ in range(dist.world)]
    torch.distributed.all_gather(sizes, torch.tensor(len(local), device=local.device))
    padded = torch.zeros((int(max(sizes)), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(dist.world)]
    torch.distributed.all_gather(parts, padded)
    return [part[: int(size)] for part, size in zip(parts, sizes)]


def sharded(fn, total: int, *per_item: torch.Tensor) -> torch.Tensor:
    """``fn`` over this process's items ``rank::world`` of ``per_item`` (seeds, labels, ...), gathered back in
    item order: with per-item seeds the result equals ``fn(*per_item)`` in one process."""
    dist = current()
    return gather_shards(fn(*(dist.shard(t) for t in per_item)), total)
