"""Qwen3-MoE sparse blocks for the fast implementation (`qwen3_fast.py`), with optional expert parallelism.

Parameter names and layouts are those of transformers' `Qwen3MoeSparseMoeBlock` (transformers >= 5):
`mlp.gate.weight` [E, hidden] (the router), `mlp.experts.gate_up_proj` [E, 2 * moe_intermediate, hidden] and
`mlp.experts.down_proj` [E, hidden, moe_intermediate]. Under expert parallelism a rank holds E/ep experts (a
contiguous slice) under the same names; loading a full state dict slices it.

Routing as in transformers: router logits -> softmax (float32) -> top-k -> renormalised when `norm_topk_prob`
-> cast to the logits' dtype; each expert is a SwiGLU MLP and its output is scaled by the routing weight.

Expert compute (`MOE_IMPL`, env TRAINBENCH_MOE, read at import; `set_moe_impl` for A/B runs):
- `grouped` (what `auto` picks on Hopper+ GPUs with bf16 weights, and on the CPU with torch >= 2.9): the
  (token, expert) pairs sorted by expert run as two `torch._grouped_mm` calls (gate/up, then down) over all
  local experts, group boundaries given as device offsets: no host sync and two launches per layer instead of
  two per expert.
- `loop` (the fallback on older GPUs, other dtypes or dims not 16-byte aligned): one GEMM pair per expert over
  `counts.tolist()` (one host sync per layer), the original implementation.
Both share the routing, the dispatch (a gather by the sorted order) and the combine (a gather back to token
order, weighted sum over the k slots): counts come from a scatter-add (`torch.bincount` syncs on CUDA), and the
gathers have permutation backwards (no atomics), so results are deterministic.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainbench.trainer.parallel.ep import EXPERT_ATTR, EPGroup, dispatch

MOE_IMPLS = ("auto", "grouped", "loop")
MOE_IMPL = os.environ.get("TRAINBENCH_MOE", "auto")


def set_moe_impl(impl: str) -> None:
    """Select the expert compute for later forwards: auto | grouped | loop (see the module doc)."""
    global MOE_IMPL
    if impl not in MOE_IMPLS:
        raise ValueError(f"unknown MoE implementation {impl!r} (choose from {', '.join(MOE_IMPLS)})")
    MOE_IMPL = impl


def grouped_mm_usable(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """Whether `torch._grouped_mm` runs these operands: CUDA capability >= 9.0 with bf16, or the CPU kernel
    (torch >= 2.9); every row 16-byte aligned (the kernels' TMA / stride requirement)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.device.type == "cuda":
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device) < (9, 0):
            return False
    elif x.device.type != "cpu":
        return False
    align = 16 // x.element_size()
    return all(w.dtype == x.dtype and w.shape[-1] % align == 0 and w.shape[-2] % align == 0 for w in weights)


def use_grouped(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    if MOE_IMPL == "loop":
        return False
    ok = grouped_mm_usable(x, *weights)
    if MOE_IMPL == "grouped" and not ok:
        raise RuntimeError(f"TRAINBENCH_MOE=grouped: torch._grouped_mm does not run {x.dtype} on {x.device}")
    return ok


def is_moe_layer(cfg: dict, idx: int) -> bool:
    return (
        cfg.get("num_experts", 0) > 0
        and idx not in (cfg.get("mlp_only_layers") or [])
        and (idx + 1) % cfg.get("decoder_sparse_step", 1) == 0
    )


class Router(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cfg["num_experts"], cfg["hidden_size"]))


class Experts(nn.Module):
    def __init__(self, cfg: dict, ep: EPGroup | None = None):
        super().__init__()
        self.num_experts = cfg["num_experts"]
        size = ep.size if ep is not None else 1
        if self.num_experts % size:
            raise ValueError(f"--ep {size} does not divide the {self.num_experts} experts")
        self.n_local = self.num_experts // size
        self.first = (ep.rank if ep is not None else 0) * self.n_local
        self.ep = ep if size > 1 else None
        h, i = cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.gate_up_proj = nn.Parameter(torch.empty(self.n_local, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(self.n_local, h, i))
        for p in (self.gate_up_proj, self.down_proj):
            setattr(p, EXPERT_ATTR, True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("gate_up_proj", "down_proj"):
            key = prefix + name
            t = state_dict.get(key)
            if t is not None and t.shape[0] == self.num_experts and self.n_local != self.num_experts:
                state_dict[key] = t[self.first : self.first + self.n_local]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def run_local(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x [M, hidden] grouped by local expert, counts [n_local] -> SwiGLU outputs [M, hidden]."""
        if use_grouped(x, self.gate_up_proj, self.down_proj):
            return self.run_grouped(x, counts)
        return self.run_loop(x, counts)

    def run_grouped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Two grouped GEMMs over all local experts; group ends are device offsets (no host sync)."""
        if x.shape[0] == 0:  # no token for any local expert (EP); the kernel's backward refuses empty inputs
            return x.new_zeros((0, self.down_proj.shape[1]))
        offs = torch.cumsum(counts, 0, dtype=torch.int32)
        # weights are [E, out, in]: the transposed view [E, in, out] is the K-major layout the kernel wants
        gu = torch._grouped_mm(x, self.gate_up_proj.transpose(-2, -1), offs=offs)
        g, u = gu.chunk(2, dim=-1)
        return torch._grouped_mm(F.silu(g) * u, self.down_proj.transpose(-2, -1), offs=offs)

    def run_loop(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """One GEMM pair per expert (the reference; `counts.tolist()` syncs the host once per call)."""
        outs = []
        for e, xe in enumerate(x.split(counts.tolist())):
            if xe.shape[0] == 0:
                continue
            g, u = F.linear(xe, self.gate_up_proj[e]).chunk(2, dim=-1)
            outs.append(F.linear(F.silu(g) * u, self.down_proj[e]))
        if not outs:  # no token for any local expert
            return x.new_zeros((0, self.down_proj.shape[1]))
        return torch.cat(outs)


class SparseMoeBlock(nn.Module):
    def __init__(self, cfg: dict, ep: EPGroup | None = None):
        super().__init__()
        self.gate = Router(cfg)
        self.experts = Experts(cfg, ep)
        self.top_k = cfg["num_experts_per_tok"]
        self.norm_topk_prob = cfg.get("norm_topk_prob", False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [N, hidden] -> [N, hidden]."""
        n = h.shape[0]
        logits = F.linear(h, self.gate.weight)
        probs = torch.softmax(logits, dim=-1, dtype=torch.float)
        top_w, top_i = torch.topk(probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        top_w = top_w.to(logits.dtype)
        k = self.top_k
        flat_e = top_i.reshape(-1)  # [n * k], token-major
        order = torch.argsort(flat_e, stable=True)  # sorted slot -> unsorted slot
        inv = torch.empty_like(order)
        inv[order] = torch.arange(order.numel(), device=order.device)  # unsorted slot -> sorted slot
        # counts per expert without a host sync (torch.bincount reads the maximum back on CUDA)
        counts = torch.zeros(self.experts.num_experts, dtype=torch.long, device=h.device)
        counts.scatter_add_(0, flat_e, torch.ones_like(flat_e))
        x_sorted = _RoutedGather.apply(h, order, inv, k)
        y = dispatch(x_sorted, counts, self.experts.n_local, self.experts.ep, self.experts.run_local)
        y = _PermGather.apply(y.to(h.dtype), inv, order).view(n, k, -1)  # back to token-major slots
        return (y * top_w.unsqueeze(-1)).sum(dim=1)


class _RoutedGather(torch.autograd.Function):
    """x[order // k]: the routed copies of the tokens in sorted order. Backward: back to token-major order by
    the inverse permutation, then the k copies of each token summed (no atomics, deterministic)."""

    @staticmethod
    def forward(ctx, x, order, inv, k):
        ctx.save_for_backward(inv)
        ctx.k = k
        return x.index_select(0, torch.div(order, k, rounding_mode="floor"))

    @staticmethod
    def backward(ctx, g):
        (inv,) = ctx.saved_tensors
        gx = g.index_select(0, inv).view(-1, ctx.k, g.shape[-1]).sum(dim=1)
        return gx, None, None, None


class _PermGather(torch.autograd.Function):
    """x[perm] for a permutation; backward gathers by its inverse."""

    @staticmethod
    def forward(ctx, x, perm, inv):
        ctx.save_for_backward(inv)
        return x.index_select(0, perm)

    @staticmethod
    def backward(ctx, g):
        (inv,) = ctx.saved_tensors
        return g.index_select(0, inv), None, None


def init_experts(model: nn.Module, std: float, seed: int | None) -> None:
    """normal(0, std) for every expert, drawn expert by expert from one generator per parameter, so each expert
    gets the same values whatever the EP size (only the local ones are kept)."""
    for name, mod in model.named_modules():
        if not isinstance(mod, Experts):
            continue
        for pname in ("gate_up_proj", "down_proj"):
            p = getattr(mod, pname)
            if p.device.type == "meta":
                continue
            gen = torch.Generator(device=p.device)
            gen.manual_seed((seed or 0) * 1_000_003 + _stable(name + "." + pname))
            with torch.no_grad():
                for e in range(mod.num_experts):
                    t = torch.empty(p.shape[1:], device=p.device, dtype=p.dtype).normal_(0.0, std, generator=gen)
                    if mod.first <= e < mod.first + mod.n_local:
                        p[e - mod.first].copy_(t)


def _stable(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode())
