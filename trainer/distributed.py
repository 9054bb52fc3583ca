"""Process group from torchrun's environment, and the data-parallel wrapper.

World: `WORLD_SIZE`, `RANK`, `LOCAL_RANK` from torchrun (single process when absent). Backend: nccl on CUDA,
gloo on CPU. Data parallel: PyTorch DDP over all ranks (replicated weights, gradient all-reduce overlapped with
backward, `no_sync()` during gradient accumulation). FSDP2 is not used yet: every shipped model up to 8B fits a
single H100/H200 replica with the bench shapes; sharding is future work.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def env_world() -> World:
    return World(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def init(world: World, device: torch.device) -> None:
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kw = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10), **kw)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_scalar(value: float, op: str, world: World, device: torch.device) -> float:
    """All-reduce one float with op 'max' | 'sum' (identity on one process)."""
    if not world.distributed or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t.item())


def wrap_ddp(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)
