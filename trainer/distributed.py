"""Process group from torchrun's environment, and the data-parallel wrapper.

World: `WORLD_SIZE`, `RANK`, `LOCAL_RANK` from torchrun (single process when absent). Backend: nccl on CUDA,
gloo on CPU. Data parallel over all ranks, `--dp`:

- `ddp`: PyTorch DDP (replicated weights, gradient all-reduce overlapped with backward, `no_sync()` while
  accumulating);
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) on each transformer block and then on the root (embeddings,
  final norm, LM head): weights, gradients and optimizer state sharded over the ranks, compute in the weights'
  dtype (bf16 on the GPU) and gradients reduce-scattered in float32 (`MixedPrecisionPolicy`), gradient sync only
  on the last micro-batch (`set_requires_gradient_sync`);
- `auto`: `fsdp` when weights + gradients + AdamW state of one replica would take more than 40% of the device
  memory (or the implementation exposes no blocks: then `ddp`), else `ddp`. On the CPU: `ddp`.
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
        # collect the finished run's reference cycles first (the DDP/FSDP-wrapped model, its reducer and pending
        # works hold the process group): otherwise the group's C++ backend can outlive destroy_process_group and
        # be torn down at interpreter exit with its worker threads still joinable, which aborts the process
        # ("terminate called without an active exception") after the result was written
        import gc

        gc.collect()
        dist.destroy_process_group()


def reduce_scalar(value: float, op: str, world: World, device: torch.device) -> float:
    """All-reduce one float with op 'max' | 'sum' (identity on one process)."""
    if not world.distributed or not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t.item())


FSDP_AUTO_FRACTION = 0.4


def choose_dp(want: str, world: World, device: torch.device, blocks, static_bytes: int) -> str | None:
    """What data parallelism runs: None on one process, else 'ddp' or 'fsdp'."""
    if not world.distributed:
        return None
    if want != "auto":
        return want
    if not blocks or device.type != "cuda":
        return "ddp"
    total = torch.cuda.get_device_properties(device).total_memory
    return "fsdp" if static_bytes > FSDP_AUTO_FRACTION * total else "ddp"


def wrap_fsdp(module: torch.nn.Module, blocks, world: World, device: torch.device) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world.size,))
    param_dtype = next(module.parameters()).dtype
    # knobs for measuring what FSDP2 costs (docs/performance.md, issue 7): reduce in the weights' dtype, and
    # keep each block's gathered weights from its forward to its backward (one all-gather per step, not two)
    reduce_dtype = param_dtype if os.environ.get("TRAINBENCH_FSDP_REDUCE") == "param" else torch.float32
    reshard = os.environ.get("TRAINBENCH_FSDP_RESHARD", "1") != "0"
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(module, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
    return module


def wrap_ddp(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    if not world.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)
