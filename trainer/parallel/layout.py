"""The rules of a rank layout (dp x cp or dp x ep): the checks that refuse what cannot run (`validate`, also run by
the operator at plan time) and the dry-run plan (ranks, parameters and `memory.per_rank_gib`). Torch-free; the
process groups and what the training loop asks of them are in mesh.py. See __init__.py."""

from __future__ import annotations

from trainbench.trainer.config import BadConfig
from trainbench.trainer.memory import expert_params, per_rank_gib

# attention with a context-parallel form (parallel/cp.py): flex over the gathered keys, or SDPA per run of local
# queries; auto takes flex on a GPU
CP_ATTN = ("auto", "flex", "sdpa", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math")


def validate(cfg, spec, world_size: int) -> None:
    """Refuse combinations of --cp/--ep with the model, the world and the other options (BadConfig)."""
    cp, ep = cfg.cp, cfg.ep
    if world_size % (cp * ep):
        raise BadConfig(f"--ep {ep} x --cp {cp} does not divide the world size {world_size}")
    if ep > 1 and not spec.is_moe:
        raise BadConfig(f"--ep {ep} needs a mixture-of-experts model; {spec.name} is dense")
    if cp == 1 and ep == 1:
        return
    if cp > 1 and ep > 1:
        raise BadConfig("--cp and --ep together are not supported (use one of them)")
    if cfg.impl == "hf":
        what = "--cp (context parallelism)" if cp > 1 else "--ep (expert parallelism)"
        raise BadConfig(f"{what} runs in the fast implementation only; --impl hf cannot split sequences or experts")
    if cfg.type not in ("sft-full", "rl-full", "rl-lora"):
        raise BadConfig(f"--cp/--ep apply to the training types, not {cfg.type}")
    if ep > 1 and spec.config["num_experts"] % ep:
        raise BadConfig(f"--ep {ep} does not divide the {spec.config['num_experts']} experts of {spec.name}")
    if ep > 1 and cfg.dp == "fsdp":
        raise BadConfig("--ep with --dp fsdp is not supported (experts are sharded by EP; use --dp ddp or auto)")
    if cp > 1 and cfg.seq_len % (2 * cp):
        raise BadConfig(f"--cp {cp} splits each sequence into {2 * cp} chunks: --seq-len must be a multiple of it")
    if cp > 1 and cfg.attn not in CP_ATTN:
        raise BadConfig(f"--attn {cfg.attn} has no context-parallel form; with --cp choose one of {', '.join(CP_ATTN)}")


# --- dry run: the plan ----------------------------------------------------------------------------------------


def plan_layout(cfg, spec, world_size: int) -> dict:
    """Parallel layout and a rough per-rank memory estimate (`memory.per_rank_gib`) for `world_size` ranks."""
    cp, ep = cfg.cp, cfg.ep
    dp = world_size // (cp * ep)
    tokens = max(cfg.micro_batch, 1) * cfg.seq_len // cp
    total = spec.n_total()
    expert_rank = expert_params(spec) // ep
    lora = spec.lora_params(cfg.effective_lora_rank, tuple(cfg.lora_targets)) if cfg.is_lora else 0
    params_rank = total - expert_params(spec) + expert_rank
    trainable_rank = lora if cfg.is_lora else params_rank
    dp_modes = {"ddp": per_rank_gib(cfg, spec, world_size, sharded=False)}
    if ep == 1:
        dp_modes["fsdp"] = per_rank_gib(cfg, spec, world_size, sharded=True)
    return {
        "world_size": world_size,
        "dp": dp,
        "cp": cp,
        "ep": ep,
        "ranks": _rank_table(world_size, cp, ep),
        "tokens_per_rank_per_micro_batch": tokens,
        "sequences_per_step": cfg.batch_size * (world_size // cp),
        "params_total": total,
        "params_per_rank_replicated": params_rank,
        "expert_params_per_rank": expert_rank,
        "trainable_per_rank": trainable_rank,
        "memory_gib_per_rank": dp_modes,
        "memory_note": "estimate: bf16 weights + bf16 grads + AdamW states (2 x bf16) + activations per --ac mode "
        "+ one LM-head loss chunk (+ CP: the whole sequence's gathered K/V in every layer, one under recompute; + MoE: routed token copies); "
        "ddp: replicated, fsdp: sharded over the world (experts: sharded over EP)",
    }


def _rank_table(world_size: int, cp: int, ep: int) -> list[str]:
    inner = cp * ep
    if inner == 1:
        return [f"dp replicas: ranks 0..{world_size - 1}"]
    name = "cp" if cp > 1 else "ep"
    groups = [list(range(g * inner, (g + 1) * inner)) for g in range(world_size // inner)]
    return [f"{name} group {i}: ranks {g}" for i, g in enumerate(groups)]
