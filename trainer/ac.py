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
- `auto`: `choose_auto()` picks the first of none, recompute, offload whose memory estimate
  (`memory.hf_estimate_bytes`) fits in 85% of the device memory (on CPU: `none`). `selective` is not in the
  automatic order because its memory in the transformers path has not been measured on a GPU yet. The result's
  `ac` says what ran.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from trainbench.trainer.memory import HF_AC_ORDER, first_fit, hf_estimate_bytes
from trainbench.trainer.specs import ModelSpec


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


def choose_auto(spec: ModelSpec, device: torch.device, tokens: int, n_trainable: int, loss_chunk: int) -> str:
    if device.type != "cuda":
        return "none"
    total = torch.cuda.get_device_properties(device).total_memory
    return first_fit(
        lambda m: hf_estimate_bytes(spec, m, tokens, n_trainable, loss_chunk), HF_AC_ORDER, total, "offload"
    )
