"""Qwen3-MoE sparse blocks for the fast implementation (`qwen3_fast.py`), with optional expert parallelism.

Parameter names and layouts are those of transformers' `Qwen3MoeSparseMoeBlock` (transformers >= 5):
`mlp.gate.weight` [E, hidden] (the router), `mlp.experts.gate_up_proj` [E, 2 * moe_intermediate, hidden] and
`mlp.experts.down_proj` [E, hidden, moe_intermediate]. Under expert parallelism a rank holds E/ep experts (a
contiguous slice) under the same names; loading a full state dict slices it.

Routing as in transformers: router logits -> softmax (float32) -> top-k -> renormalised when `norm_topk_prob`
-> cast to the logits' dtype; each expert is a SwiGLU MLP and its output is scaled by the routing weight.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainbench.trainer.parallel.ep import EXPERT_ATTR, EPGroup, dispatch


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
        flat_e = top_i.reshape(-1)
        order = torch.argsort(flat_e, stable=True)
        token = order // self.top_k
        counts = torch.bincount(flat_e, minlength=self.experts.num_experts)
        y = dispatch(h[token], counts, self.experts.n_local, self.experts.ep, self.experts.run_local)
        y = y * top_w.reshape(-1)[order, None]
        return h.new_zeros((n, h.shape[1])).index_add(0, token, y.to(h.dtype))


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
