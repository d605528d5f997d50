"""Process-group set-up for training under ``torchrun`` (DDP); one process otherwise.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE`` > 1 the
process group is initialised (gloo on the CPU, nccl on CUDA, each process on GPU
``LOCAL_RANK``). All communication is torch.distributed's own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as dist

from ..device import resolve_device

#: how long a collective waits for the other processes (rank 0 validates alone meanwhile)
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: Optional[str]) -> Context:
    """The process's rank and device; joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(chosen)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=TIMEOUT)
    return Context(rank, world, local_rank, local_world, chosen)


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Context) -> None:
    if context.distributed:
        dist.barrier()


def sum_over_processes(context: Context, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over the processes (float64)."""
    if not context.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64,
                          device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def gather(context: Context, value: Any) -> list[Any]:
    """``value`` of every process, by rank."""
    if not context.distributed:
        return [value]
    out: list[Any] = [None] * context.world
    dist.all_gather_object(out, value)
    return out
