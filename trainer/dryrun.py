"""`--dry-run`: resolve the configuration on the meta device (no weights, no data) and print the plan: parameters,
FLOPs per token, tokens per step, the parallel layout and its per-rank memory estimate."""

from __future__ import annotations

import torch

from trainbench.trainer.context import RunContext
from trainbench.trainer.models.base import resolve_dtype
from trainbench.trainer.models.hf import build_model
from trainbench.trainer.parallel.layout import plan_layout
from trainbench.trainer.result import base_result


def dry_run(ctx: RunContext) -> dict:
    cfg, spec, world_size = ctx.cfg, ctx.spec, ctx.world.size
    model = build_model(spec, torch.device("meta"), resolve_dtype(cfg.dtype, ctx.device))
    n_params = sum(p.numel() for p in model.parameters())
    res = base_result(cfg, spec, world_size)
    res.update(
        status="dry-run",
        n_active=spec.n_active(),
        n_params=n_params,
        n_adapter=spec.lora_params(cfg.effective_lora_rank, tuple(cfg.lora_targets)) if cfg.is_lora else 0,
        flops_per_token=spec.flops_per_token(cfg.seq_len, cfg.effective_lora_rank, tuple(cfg.lora_targets)),
        peak_flops=ctx.peak,
        peak_flops_source=ctx.peak_source,
        tokens_per_step=cfg.batch_size * cfg.seq_len * world_size // cfg.cp,
        device=str(ctx.device),
        model_config=spec.config,
    )
    res["parallel"] = plan_layout(cfg, spec, world_size)
    return res
