"""Causal attention within documents of a packed sequence (tokens never attend across a document boundary).

Inputs are flat over all tokens of the micro-batch: q [N, H, D], k and v [N, KV, D] (grouped-query attention when
KV < H), and the document boundaries `cu_seqlens` ([n_docs + 1], over the N tokens). Output [N, H, D].

Backends (the name is what `attn_backend` reports):
- `sdpa-cudnn` / `sdpa-flash` / `sdpa-efficient` / `sdpa-math` / `sdpa`: one causal
  `scaled_dot_product_attention` call per document, restricted to that SDPA backend. A handful of documents per
  sequence (bench mode packs 4) costs a handful of launches per layer; each runs the dense causal kernel, which
  on Hopper is cuDNN's (577 TF fwd+bwd measured on an H200, against 311 for FA2).
- `varlen`: `torch.nn.attention.varlen.varlen_attn` (FlashAttention-2 varlen inside torch >= 2.10), one launch.
- `flex`: `flex_attention` with a document-causal `BlockMask` (compiled), one launch.
- `fa4`: flash-attn-4 (`flash_attn.cute.flash_attn_varlen_func`, CuTe DSL kernels for Hopper and Blackwell),
  varlen over the documents with native GQA, one launch; only when the package is installed.
"""

from __future__ import annotations

import inspect
from functools import cache

import torch
import torch.nn.functional as F

SDPA_BACKENDS = {
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}
DOC_BACKENDS = ("sdpa", *SDPA_BACKENDS, "varlen", "flex", "fa4")


def _sdpa_context(backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if backend == "sdpa":
        import contextlib

        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[backend])])


def _expand_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    # [1, KV, S, D] -> [1, KV * groups, S, D] (each kv head repeated for its group of query heads)
    if groups == 1:
        return x
    b, kv, s, d = x.shape
    return x[:, :, None].expand(b, kv, groups, s, d).reshape(b, kv * groups, s, d)


def sdpa_per_document(q, k, v, bounds: list[int], backend: str = "sdpa", gqa: str = "native", scale=None):
    """One causal SDPA call per document. `bounds` are the host-side cu_seqlens. `gqa`: 'native' passes
    enable_gqa=True, 'expand' repeats the kv heads first (for backends without native GQA)."""
    n, h, d = q.shape
    groups = h // k.shape[1]
    q4, k4, v4 = (t.unsqueeze(0).transpose(1, 2) for t in (q, k, v))  # [1, heads, N, D] views
    outs = []
    with _sdpa_context(backend):
        for s, e in zip(bounds[:-1], bounds[1:], strict=True):
            qs, ks, vs = q4[:, :, s:e], k4[:, :, s:e], v4[:, :, s:e]
            if groups > 1 and gqa == "expand":
                ks, vs = _expand_kv(ks, groups), _expand_kv(vs, groups)
                o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)
            else:
                o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=groups > 1)
            outs.append(o)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.squeeze(0).transpose(0, 1)  # [N, H, D] (strided view)


@cache
def _varlen_kwargs() -> tuple[str, ...]:
    from torch.nn.attention.varlen import varlen_attn

    return tuple(inspect.signature(varlen_attn).parameters)


def varlen_attention(q, k, v, cu_seqlens: torch.Tensor, max_seqlen: int, scale=None):
    from torch.nn.attention.varlen import varlen_attn

    params = _varlen_kwargs()
    kw = {}
    if "is_causal" in params:
        kw["is_causal"] = True
    else:
        kw["window_size"] = (-1, 0)
    if "enable_gqa" in params and k.shape[1] != q.shape[1]:
        kw["enable_gqa"] = True
    if scale is not None:
        kw["scale"] = scale
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    return varlen_attn(q, k, v, cu, cu, max_seqlen, max_seqlen, **kw)


FA4_ARCHS = (9, 10)  # compute capability majors with flash-attn-4 kernels: Hopper (sm90), Blackwell (sm100)


def fa4_usable(device) -> bool:
    """flash-attn-4 imports (its CuTe DSL too) and has kernels for this GPU's architecture."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] not in FA4_ARCHS:
        return False
    try:
        import flash_attn.cute  # noqa: F401
    except Exception:  # not installed, or installed without a working CuTe DSL (e.g. no `cutlass.cute`)
        return False
    return True


def fa4_attention(q, k, v, cu_seqlens: torch.Tensor, max_seqlen: int, scale=None):
    from flash_attn.cute import flash_attn_varlen_func

    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    out = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen,
        softmax_scale=scale, causal=True,
    )  # fmt: skip
    return out[0] if isinstance(out, tuple) else out


_flex_compiled = None


def _flex():
    global _flex_compiled
    if _flex_compiled is None:
        from torch.nn.attention.flex_attention import flex_attention

        _flex_compiled = torch.compile(flex_attention, dynamic=False)
    return _flex_compiled


def document_block_mask(doc_ids: torch.Tensor, q_positions: torch.Tensor | None = None):
    """Document-causal BlockMask over N flat tokens (doc_ids [N]). `q_positions` [n]: only the queries at these
    flat positions, against all N keys (a context-parallel rank's share, parallel/cp.py)."""
    from torch.nn.attention.flex_attention import create_block_mask

    docs = doc_ids.reshape(-1)
    n = docs.numel()

    def mask_mod(b, h, q_idx, kv_idx):
        pos = q_idx if q_positions is None else q_positions[q_idx]
        return (docs[pos] == docs[kv_idx]) & (pos >= kv_idx)

    q_len = n if q_positions is None else q_positions.numel()
    # _compile: evaluate the mask per block through the compiler instead of over all N x N pairs eagerly
    # (at N = 65,536 the eager path touches 4.3e9 elements every step)
    return create_block_mask(mask_mod, None, None, q_len, n, device=docs.device, _compile=docs.is_cuda)


def flex_attention(q, k, v, block_mask, scale=None):
    """q [n, H, D], k/v [N, KV, D] -> [n, H, D]: compiled flex (the fused kernel) on a GPU, eager flex (its
    reference form, forward only) on the CPU."""
    from torch.nn.attention.flex_attention import flex_attention as eager

    q4, k4, v4 = (t.unsqueeze(0).transpose(1, 2) for t in (q, k, v))
    fn = _flex() if q.is_cuda else eager
    o = fn(q4, k4, v4, block_mask=block_mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    return o.squeeze(0).transpose(0, 1)
