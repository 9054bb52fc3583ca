"""Attention backend selection (`--attn`).

`resolve(attn, device_type, docs_per_seq)` -> `AttnChoice(label, hf_impl, sdpa_backends)`:

- `auto` (for the transformers implementation): on CUDA with packed documents and T <= 8192 `flex` (transformers
  builds a block-sparse BlockMask from the packed position ids, so cross-document blocks are skipped); otherwise
  `sdpa` (with packed documents torch runs its mask-capable kernel, memory-efficient attention; with one document
  per sequence plain causal, cuDNN/flash). Measured on an H200: transformers' flex path gave 28.8% MFU for
  Qwen3-0.6B SFT at 8k, but at 16k its first step did not finish within 90 s, while SDPA ran at 15.3%. The result
  records what ran (`attn_backend`). The fast implementation has its own, faster, choice.
- `sdpa`: transformers' SDPA path, torch chooses the kernel. `sdpa-cudnn|flash|efficient|math`: the same path
  restricted with `torch.nn.attention.sdpa_kernel` to one backend (cuDNN/efficient need CUDA; flash cannot take
  the block-causal mask of packed documents, so it needs `--docs-per-seq 1`; a backend that refuses the inputs at
  run time, "No available kernel", is reported as BadConfig).
- `flex`: transformers' flex_attention path (compiled flex attention, BlockMask from the packed position ids).
- `fa2|fa3|fa4`: transformers' flash_attention_2/3/4 paths (varlen over the packed documents), only when their
  package imports (`flash_attn`, `flash_attn_interface`, `flash_attn.cute`); otherwise BadConfig names it.
- `eager`: transformers' eager attention (reference, slow).
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass

from trainbench.trainer.config import BadConfig

_FLASH_PACKAGES = {
    "fa2": ("flash_attn", "flash_attention_2"),
    "fa3": ("flash_attn_interface", "flash_attention_3"),
    "fa4": ("flash_attn.cute", "flash_attention_4"),
}
_SDPA = {
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}


@dataclass(frozen=True)
class AttnChoice:
    label: str  # what ran (recorded in the result)
    hf_impl: str  # transformers attn_implementation
    sdpa_backend: str | None = None  # torch.nn.attention.SDPBackend member name

    def context(self):
        """Context for forward and backward (recompute included) restricting SDPA to the chosen backend."""
        if self.sdpa_backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, self.sdpa_backend)])


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


FLEX_AUTO_MAX_SEQ = 8192  # transformers' flex path did not finish its first step in 90 s at 16k (H200, call 2)


def resolve(attn: str, device_type: str, docs_per_seq: int, seq_len: int = 0) -> AttnChoice:
    if attn == "auto":
        if device_type == "cuda" and docs_per_seq > 1 and seq_len <= FLEX_AUTO_MAX_SEQ:
            return AttnChoice("flex", "flex_attention")
        return AttnChoice("sdpa", "sdpa")
    if attn in ("sdpa", "eager"):
        return AttnChoice(attn, attn)
    if attn == "flex":
        if device_type == "cpu":
            raise BadConfig("--attn flex needs a GPU: FlexAttention has no backward pass on the CPU")
        return AttnChoice("flex", "flex_attention")
    if attn in _SDPA:
        if attn in ("sdpa-cudnn", "sdpa-efficient") and device_type != "cuda":
            raise BadConfig(f"--attn {attn} needs a CUDA device (this run is on {device_type})")
        if attn == "sdpa-flash" and docs_per_seq > 1:
            raise BadConfig(
                f"--attn {attn} cannot apply the block-causal mask of packed documents; "
                "use --docs-per-seq 1, or --attn flex / sdpa-efficient / fa2-fa4"
            )
        return AttnChoice(attn, "sdpa", _SDPA[attn])
    if attn in _FLASH_PACKAGES:
        module, impl = _FLASH_PACKAGES[attn]
        if not _importable(module):
            raise BadConfig(f"--attn {attn} needs the Python package providing {module!r}, which is not installed")
        if device_type != "cuda":
            raise BadConfig(f"--attn {attn} needs a CUDA device (this run is on {device_type})")
        return AttnChoice(attn, impl)
    raise BadConfig(f"unknown attention backend {attn!r}")
