"""The memory estimates, in one place: bytes per rank that a training step needs, by activation-checkpointing mode.

Torch-free (the dry run and the operator side read it). Two implementations keep different activations, so each
has its activation term; everything else (weights, gradients, AdamW states, the loss's LM-head chunk) is counted
the same way per implementation as it was calibrated:

- `hf_estimate_bytes` (transformers + peft, `ac.py` applies the mode per block): static = 2 * n_total (weights)
  + 6 * n_trainable (gradients and two AdamW states in the weight dtype) + two chunks of float32 logits + the final
  hidden states and their gradient; activations per token per block ~ 1.1 * (2 * (10*h + 4*q_dim + 4*kv_dim + 5*i)
  + 4 * 4*h) for `none` (h hidden, i MLP width - active experts for MoE; the 4*4*h term is transformers' float32
  RMSNorm intermediates), 2*h plus one block's full set for `recompute`, one block's full set for `offload`.
  Calibration: Qwen3-0.6B rl-full at 16k with `none` reserved 55.1 GiB on an H200 (estimate 52.5 GiB); Qwen3-4B
  rl-lora at 16k with `none` ran out of 140 GiB (the estimate says 152 GiB and picks `recompute`).
- `fast_estimate_bytes` (models/qwen3_fast.py, compiled blocks): `fast_activation_bytes` per mode, x 1.12 (on the
  H200 the measured peak reserved memory was up to 12% above the plain sum, 4B LoRA rows).
- `per_rank_gib` (the dry run's plan, `--ac auto` under CP/EP): the fast implementation's activations on T/cp
  tokens with E/ep experts per rank, replicated (ddp) or sharded over the world (fsdp).

`first_fit` picks the first mode in an order whose estimate fits in MEMORY_FRACTION of the device.
"""

from __future__ import annotations

GIB = 2**30
MEMORY_FRACTION = 0.85  # share of the device's memory an estimate may fill
HF_AC_ORDER = ("none", "recompute", "offload")  # `selective` not measured on a GPU in the transformers path
FAST_AC_ORDER = ("none", "selective", "recompute")
FAST_MARGIN = 1.12


def first_fit(estimate, order: tuple[str, ...], total_bytes: float, fallback: str) -> str:
    """The first mode of `order` whose `estimate(mode)` (bytes) fits in MEMORY_FRACTION x total; else fallback."""
    for mode in order:
        if estimate(mode) <= MEMORY_FRACTION * total_bytes:
            return mode
    return fallback


# --- transformers + peft (models/hf.py) ------------------------------------------------------------------------


def hf_estimate_bytes(spec, mode: str, tokens: int, n_trainable: int, loss_chunk: int, bytes_per_el: int = 2) -> int:
    """Rough peak-memory estimate of one rank for AC `mode` (see the module doc)."""
    c = spec.config
    h = spec.hidden
    i = c["moe_intermediate_size"] * c["num_experts_per_tok"] if spec.is_moe else c["intermediate_size"]
    q_dim = spec.heads * spec.head_dim
    kv_dim = spec.kv_heads * spec.head_dim
    per_tok_block = int(1.1 * (bytes_per_el * (10 * h + 4 * q_dim + 4 * kv_dim + 5 * i) + 4 * 4 * h))
    static = bytes_per_el * spec.n_total() + 3 * bytes_per_el * n_trainable + 4 * loss_chunk * spec.vocab * 2
    static += tokens * h * 4 * 2  # final hidden states and their gradient
    one_block = per_tok_block * tokens
    acts = {
        "none": spec.layers * one_block,
        "selective": spec.layers * one_block // 2,
        "recompute": spec.layers * bytes_per_el * h * tokens + one_block,
        "offload": one_block,
    }[mode]
    return static + acts


# --- the fast implementation (models/qwen3_fast.py) --------------------------------------------------------------


def fast_activation_bytes(spec, mode: str, tokens: int, bytes_per_el: int = 2) -> int:
    """Activations kept for backward by the fast implementation, per AC mode (compiled blocks; rough, upper side)."""
    h, i = spec.hidden, spec.config["intermediate_size"]
    q, kv = spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    per_layer = {
        "none": 4 * h + 3 * q + 3 * kv + 3 * i,  # inputs, normed inputs, q/k/v (+pre-norm), o, MLP gate/up/act
        "selective": h + 2 * q + 2 * kv,  # block input, q/k/v, attention output (attention never recomputed)
        "recompute": h,  # block input only (+ one block during its backward, below)
    }[mode]
    one_block = (4 * h + 3 * q + 3 * kv + 3 * i) * tokens * bytes_per_el
    extra = one_block if mode != "none" else 0
    return spec.layers * per_layer * tokens * bytes_per_el + extra


def fast_estimate_bytes(spec, mode: str, tokens: int, n_trainable: int, loss_chunk: int) -> int:
    weights = 2 * spec.n_total()
    optim = 3 * 2 * n_trainable  # bf16 grads + AdamW's two bf16 states
    lm_head = 3 * loss_chunk * spec.vocab * 2 + (4 * spec.vocab * spec.hidden if n_trainable > 1e8 else 0)
    final = 4 * tokens * spec.hidden * 2
    return int(FAST_MARGIN * (weights + optim + lm_head + final + fast_activation_bytes(spec, mode, tokens)))


# --- per rank under data, context and expert parallelism (the dry run's plan) -----------------------------------


def moe_layers(spec) -> int:
    c = spec.config
    if not spec.is_moe:
        return 0
    return sum(
        1
        for i in range(spec.layers)
        if i not in (c.get("mlp_only_layers") or []) and (i + 1) % c.get("decoder_sparse_step", 1) == 0
    )


def expert_params(spec) -> int:
    c = spec.config
    return moe_layers(spec) * c["num_experts"] * 3 * spec.hidden * c["moe_intermediate_size"] if spec.is_moe else 0


def per_rank_gib(cfg, spec, world_size: int, sharded: bool) -> dict[str, float]:
    """GiB per rank by AC mode (none, selective, recompute) for `world_size` ranks: bf16 weights, bf16 grads + AdamW
    states, activations on this rank's T/cp tokens, one LM-head chunk (+ CP: the gathered K/V of the whole
    sequence, which the attention keeps for its backward in every layer, or in the one block being recomputed
    under `recompute`; CP's SDPA form keeps up to 4x more, its repeated kv heads, see parallel/cp.py; + MoE:
    routed token copies); `sharded`: FSDP over the world (experts: sharded over EP either way)."""
    cp, ep = cfg.cp, cfg.ep
    tokens = max(cfg.micro_batch, 1) * cfg.seq_len // cp
    c = spec.config
    n_moe = moe_layers(spec)
    expert = expert_params(spec)
    dense = spec.n_total() - expert
    expert_rank = expert // ep
    lora = spec.lora_params(cfg.effective_lora_rank, tuple(cfg.lora_targets)) if cfg.is_lora else 0
    div = world_size if sharded else 1
    weights = 2 * (dense / div + expert_rank)
    state = 6 * (lora / div if cfg.is_lora else dense / div + expert_rank)
    lm_head = 3 * min(cfg.loss_chunk, tokens) * spec.vocab * 4
    kv_full = 2 * cfg.seq_len * max(cfg.micro_batch, 1) * spec.kv_heads * spec.head_dim * 2 if cp > 1 else 0
    # MoE: the routed copies of the hidden states saved for backward (the experts' inputs and outputs: 2 x top-k
    # per token and layer) stay outside the checkpointed regions except under full recompute
    routed = 2 * c.get("num_experts_per_tok", 0) * spec.hidden * tokens * 2 if spec.is_moe else 0
    out = {}
    for mode in FAST_AC_ORDER:
        act = fast_activation_bytes(spec, mode, tokens) + kv_full * (spec.layers if mode != "recompute" else 1)
        act += routed * (n_moe if mode != "recompute" else 1)
        out[mode] = round((weights + state + lm_head + act) / GIB, 2)
    return out
