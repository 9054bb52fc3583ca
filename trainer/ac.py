"""Activation checkpointing (`--ac`), applied per transformer block by wrapping each block's `forward`.

- `none`: autograd keeps every activation.
- `recompute`: full recompute per block (`torch.utils.checkpoint`, non-reentrant): only each block's input is kept;
  the block's forward runs again in backward (about one extra forward pass).
- `selective`: per-block selective activation checkpointing (torch's `create_selective_checkpoint_contexts`, the
  policy torchtitan calls "op-level SAC"): outputs of attention kernels and of every second matmul are saved, all
  other ops (the other matmuls, norms, RoPE, SwiGLU, ...) are recomputed. Less recompute than `recompute`, less
  memory than `none`.
- `offload`: activations saved inside each block go to host memory (`torch.autograd.graph.save_on_cpu`,
  pinned on CUDA) and come back in backward; no recompute.
- `auto`: `choose_auto()` picks the first of none, recompute, offload whose memory estimate fits in 85% of the
  device memory (on CPU: `none`). `selective` is not in the automatic order because its memory in the
  transformers path has not been measured on a GPU yet. The result's `ac` says what ran.

The estimate (bytes, bf16): static = 2 * n_total (weights) + 6 * n_trainable (gradients and two AdamW states in
the weight dtype) + two chunks of float32 logits + the final hidden states and their gradient; activations per
token per block ~ 1.1 * (2 * (10*h + 4*q_dim + 4*kv_dim + 5*i) + 4 * 4*h) for `none` (h hidden, i MLP width -
active experts for MoE; the 4*4*h term is transformers' float32 RMSNorm intermediates), 2*h plus one block's full
set for `recompute`, one block's full set for `offload`. Calibration: Qwen3-0.6B rl-full at 16k with `none`
reserved 55.1 GiB on an H200 (estimate 52.5 GiB); Qwen3-4B rl-lora at 16k with `none` ran out of 140 GiB (the
estimate now says 152 GiB and picks `recompute`; not yet re-run on the GPU).
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from trainbench.trainer.specs import ModelSpec

AUTO_ORDER = ("none", "recompute", "offload")
MEMORY_FRACTION = 0.85


def _sac_save_ops() -> set:
    aten = torch.ops.aten
    names = [
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_flash_attention_forward",
        "_efficient_attention_forward",
        "mm",
    ]
    ops = set()
    for n in names:
        packet = getattr(aten, n, None)
        if packet is not None and hasattr(packet, "default"):
            ops.add(packet.default)
    return ops


def _sac_context_fn():
    save = _sac_save_ops()
    mm = torch.ops.aten.mm.default
    counts = defaultdict(int)

    def policy(ctx, func, *args, **kwargs):
        key = "recompute" if ctx.is_recompute else "forward"
        if func == mm:
            counts[key] += 1
            return CheckpointPolicy.MUST_SAVE if counts[key] % 2 == 1 else CheckpointPolicy.PREFER_RECOMPUTE
        return CheckpointPolicy.MUST_SAVE if func in save else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def _wrap(block: torch.nn.Module, make) -> None:
    inner = block.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        return make(inner, *args, **kwargs)

    block.forward = forward


def apply_ac(blocks, mode: str, device_type: str) -> None:
    """Apply `mode` (not `auto`) to each block in `blocks` in place."""
    if mode == "none":
        return
    for block in blocks:
        if mode == "recompute":
            _wrap(block, lambda f, *a, **k: checkpoint(f, *a, use_reentrant=False, **k))
        elif mode == "selective":
            _wrap(block, lambda f, *a, **k: checkpoint(f, *a, use_reentrant=False, context_fn=_sac_context_fn, **k))
        elif mode == "offload":
            pin = device_type == "cuda"

            def offload(f, *a, _pin=pin, **k):
                with torch.autograd.graph.save_on_cpu(pin_memory=_pin):
                    return f(*a, **k)

            _wrap(block, offload)
        else:
            raise ValueError(f"unknown AC mode {mode!r}")


def estimate_bytes(
    spec: ModelSpec, mode: str, tokens: int, n_trainable: int, loss_chunk: int, bytes_per_el: int = 2
) -> int:
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


def choose_auto(spec: ModelSpec, device: torch.device, tokens: int, n_trainable: int, loss_chunk: int) -> str:
    if device.type != "cuda":
        return "none"
    total = torch.cuda.get_device_properties(device).total_memory
    for mode in AUTO_ORDER:
        if estimate_bytes(spec, mode, tokens, n_trainable, loss_chunk) <= MEMORY_FRACTION * total:
            return mode
    return "offload"
