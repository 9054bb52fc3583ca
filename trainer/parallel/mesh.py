"""The rank layout of a running job: its process groups (a device mesh dp x cp or dp x ep) and what the training
loop asks of it (which data a rank trains on, how a batch is split, gradient scale and sync of sharded experts).
The rules and the dry-run plan are torch-free in layout.py; see __init__.py."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.nn.parallel import DistributedDataParallel as DDP

from trainbench.trainer.parallel.cp import shard_batch
from trainbench.trainer.parallel.ep import EPGroup, is_expert_param


class Layout:
    """What the training loop (train.py) needs: which data a rank trains on, how a batch is split, gradient scale and sync."""

    def __init__(self, rank: int, world_size: int, cp: int = 1, ep: int = 1, groups: dict | None = None):
        self.rank, self.world_size, self.cp, self.ep = rank, world_size, cp, ep
        self.groups = groups or {}
        self.dp = world_size // (cp * ep)

    # data
    @property
    def data_rank(self) -> int:
        """Seed index of this rank's data: the ranks of a CP group share their sequences."""
        return self.rank // self.cp

    @property
    def data_ranks(self) -> int:
        """How many ranks train on distinct data (tokens per step count each of them once)."""
        return self.world_size // self.cp

    @property
    def cp_rank(self) -> int:
        return self.rank % self.cp

    @property
    def ep_rank(self) -> int:
        return self.rank % self.ep

    def ep_group(self):
        if self.ep == 1:
            return None
        return EPGroup(self.groups["ep"], self.ep_rank, self.ep)

    def shard(self, batch):
        if self.cp == 1:
            return batch
        return shard_batch(batch, self.cp_rank, self.cp, self.groups["cp"])

    def loss_tokens(self, batch) -> int:
        return batch.loss_tokens if self.cp > 1 else int(batch.loss_mask.sum())

    # gradients
    @property
    def grad_scale(self) -> float:
        """DDP/FSDP average over all ranks; a CP group's ranks hold parts of ONE loss, so their gradients must add."""
        return float(self.cp)

    def step_loss(self, loss) -> float:
        """The step's loss as one process over the whole sequence would report it (CP: summed over the group)."""
        if self.cp == 1:
            return float(loss.item())
        t = loss.detach().clone()
        dist.all_reduce(t, group=self.groups["cp"])
        return float(t.item())

    def before_wrap(self, module) -> None:
        """Expert parameters are sharded: DDP must not average them over ranks holding other experts."""
        if self.ep == 1:
            return
        names = [n for n, p in module.named_parameters() if is_expert_param(p)]
        DDP._set_params_and_buffers_to_ignore_for_model(module, names)

    def after_backward(self, params) -> None:
        """Expert gradients: sum over the DP replicas of this shard, divided by the world size (as DDP does for the
        replicated parameters, whose loss gradients every rank's tokens contribute to)."""
        if self.ep == 1:
            return
        for p in params:
            if not is_expert_param(p) or not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if self.dp > 1:
                dist.all_reduce(p.grad, group=self.groups["dp"])
            p.grad.div_(self.world_size)

    def replicated(self, params):
        return [p for p in params if not is_expert_param(p)]

    def info(self) -> dict:
        return {"world_size": self.world_size, "dp": self.dp, "cp": self.cp, "ep": self.ep}


_CACHE: dict = {}


def get_layout(cfg, world, device) -> Layout:
    """The layout of this rank; process groups are made once per (world, cp, ep) (every rank must call this)."""
    key = (world.size, cfg.cp, cfg.ep, device.type)
    if key not in _CACHE or not _groups_alive(_CACHE[key]):
        groups = {}
        inner = cfg.cp * cfg.ep
        if inner > 1 and world.size > 1:
            name = "cp" if cfg.cp > 1 else "ep"
            mesh = init_device_mesh(device.type, (world.size // inner, inner), mesh_dim_names=("dp", name))
            groups = {name: mesh.get_group(name), "dp": mesh.get_group("dp")}
        _CACHE[key] = Layout(world.rank, world.size, cfg.cp, cfg.ep, groups)
    return _CACHE[key]


def _groups_alive(layout: Layout) -> bool:
    if not layout.groups:
        return True
    return dist.is_initialized()
