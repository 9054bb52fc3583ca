"""The rank layout of a run (dp x cp or dp x ep), its process groups, what bench.py asks of it, the checks that
refuse what cannot run, and the dry-run plan (parallel layout and a per-rank memory estimate). See __init__.py."""

from __future__ import annotations

from trainbench.trainer.config import BadConfig

CP_ATTN = ("auto", "sdpa", "sdpa-cudnn", "sdpa-flash", "sdpa-efficient", "sdpa-math")


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
        raise BadConfig(f"--cp runs attention as SDPA per document run; --attn {cfg.attn} is not available with it")


class Layout:
    """What bench.py needs: which data a rank trains on, how a batch is split, gradient scale and sync."""

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
        from trainbench.trainer.parallel.ep import EPGroup

        if self.ep == 1:
            return None
        return EPGroup(self.groups["ep"], self.ep_rank, self.ep)

    def shard(self, batch):
        if self.cp == 1:
            return batch
        from trainbench.trainer.parallel.cp import shard_batch

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
        import torch.distributed as dist

        t = loss.detach().clone()
        dist.all_reduce(t, group=self.groups["cp"])
        return float(t.item())

    def before_wrap(self, module) -> None:
        """Expert parameters are sharded: DDP must not average them over ranks holding other experts."""
        if self.ep == 1:
            return
        from torch.nn.parallel import DistributedDataParallel as DDP

        from trainbench.trainer.models.moe import is_expert_param

        names = [n for n, p in module.named_parameters() if is_expert_param(p)]
        DDP._set_params_and_buffers_to_ignore_for_model(module, names)

    def after_backward(self, params) -> None:
        """Expert gradients: sum over the DP replicas of this shard, divided by the world size (as DDP does for the
        replicated parameters, whose loss gradients every rank's tokens contribute to)."""
        if self.ep == 1:
            return
        import torch
        import torch.distributed as dist

        from trainbench.trainer.models.moe import is_expert_param

        for p in params:
            if not is_expert_param(p) or not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if self.dp > 1:
                dist.all_reduce(p.grad, group=self.groups["dp"])
            p.grad.div_(self.world_size)

    def replicated(self, params):
        from trainbench.trainer.models.moe import is_expert_param

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
            from torch.distributed.device_mesh import init_device_mesh

            name = "cp" if cfg.cp > 1 else "ep"
            mesh = init_device_mesh(device.type, (world.size // inner, inner), mesh_dim_names=("dp", name))
            groups = {name: mesh.get_group(name), "dp": mesh.get_group("dp")}
        _CACHE[key] = Layout(world.rank, world.size, cfg.cp, cfg.ep, groups)
    return _CACHE[key]


def _groups_alive(layout: Layout) -> bool:
    if not layout.groups:
        return True
    import torch.distributed as dist

    return dist.is_initialized()


# --- dry run: the plan ----------------------------------------------------------------------------------------

GIB = 2**30


def plan_layout(cfg, spec, world_size: int) -> dict:
    """Parallel layout and a rough per-rank memory estimate (bf16 weights, bf16 grads + AdamW states, activations
    by AC mode) for `world_size` ranks."""
    from trainbench.trainer.models.qwen3_fast import activation_bytes

    cp, ep = cfg.cp, cfg.ep
    dp = world_size // (cp * ep)
    tokens = max(cfg.micro_batch, 1) * cfg.seq_len // cp
    c = spec.config
    expert = n_moe = 0
    if spec.is_moe:
        n_moe = sum(
            1
            for i in range(spec.layers)
            if i not in (c.get("mlp_only_layers") or []) and (i + 1) % c.get("decoder_sparse_step", 1) == 0
        )
        expert = n_moe * c["num_experts"] * 3 * spec.hidden * c["moe_intermediate_size"]
    total = spec.n_total()
    dense = total - expert
    expert_rank = expert // ep
    lora = spec.lora_params(cfg.effective_lora_rank, tuple(cfg.lora_targets)) if cfg.is_lora else 0
    params_rank = dense + expert_rank
    trainable_rank = lora if cfg.is_lora else params_rank

    def mem(sharded: bool) -> dict:
        div = world_size if sharded else 1
        weights = 2 * (dense / div + expert_rank)
        state = 6 * (lora / div if cfg.is_lora else dense / div + expert_rank)
        lm_head = 3 * min(cfg.loss_chunk, tokens) * spec.vocab * 4
        kv_full = 2 * cfg.seq_len * max(cfg.micro_batch, 1) * spec.kv_heads * spec.head_dim * 2 if cp > 1 else 0
        out = {}
        # MoE: the routed copies of the hidden states saved for backward (the experts' inputs and outputs: 2 x
        # top-k per token and layer) stay outside the checkpointed regions except under full recompute
        routed = 2 * c.get("num_experts_per_tok", 0) * spec.hidden * tokens * 2 if spec.is_moe else 0
        for mode in ("none", "selective", "recompute"):
            act = activation_bytes(spec, mode, tokens) + kv_full
            act += routed * (n_moe if mode != "recompute" else 1)
            out[mode] = round((weights + state + lm_head + act) / GIB, 2)
        return out

    dp_modes = {"ddp": mem(False)}
    if ep == 1:
        dp_modes["fsdp"] = mem(True)
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
        "+ one LM-head loss chunk (+ CP: the gathered K/V of one layer; + MoE: routed token copies); "
        "ddp: replicated, fsdp: sharded over the world (experts: sharded over EP)",
    }


def _rank_table(world_size: int, cp: int, ep: int) -> list[str]:
    inner = cp * ep
    if inner == 1:
        return [f"dp replicas: ranks 0..{world_size - 1}"]
    name = "cp" if cp > 1 else "ep"
    groups = [list(range(g * inner, (g + 1) * inner)) for g in range(world_size // inner)]
    return [f"{name} group {i}: ranks {g}" for i, g in enumerate(groups)]
