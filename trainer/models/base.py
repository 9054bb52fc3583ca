"""The model interface bench mode trains: what an implementation (transformers `hf`, or a fast one) provides."""

from __future__ import annotations

import contextlib

import torch


class Impl:
    """One built model on one device.

    - `module`: the `nn.Module` the optimizer sees (trainable parameters require grad; LoRA: adapters only).
    - `hidden_states(batch)`: final-normed hidden states `[B*T, hidden]` for a `data.Batch` (packed documents:
      attention never crosses a document boundary, positions restart at each document).
    - `lm_head_weight`: `[vocab, hidden]` (tied to the embedding when the config ties them).
    - `attn_backend`, `ac`: what actually ran (recorded in the result).
    - `context()`: entered around each micro-batch's forward and backward (e.g. an SDPA backend restriction).
    - `blocks`: the transformer blocks (FSDP2 shards each one); empty when the implementation does not expose them.
    """

    name: str = "base"
    module: torch.nn.Module
    attn_backend: str = ""
    ac: str = "none"
    blocks: list = []

    def hidden_states(self, batch) -> torch.Tensor:
        raise NotImplementedError

    @property
    def lm_head_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def context(self):
        return contextlib.nullcontext()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def n_params(self) -> int:
        seen, n = set(), 0
        for p in self.module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        return n


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on an accelerator, float32 on the CPU."""
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return getattr(torch, dtype)
