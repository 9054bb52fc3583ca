"""Context parallelism: a packed sequence split over the ranks of a CP group, attention over the whole sequence.

Split (load-balanced for causal attention, "zigzag"): each row of T tokens is cut into 2N chunks of T/2N; rank
i keeps chunks i and 2N-1-i (an early, cheap chunk and a late, expensive one). Every rank then computes q, k, v
for its own T/N tokens; `cp_attention` all-gathers k and v over the group with the
functional collective `all_gather_single_autograd` (`all_gather_tensor_autograd` before torch 2.12; autograd-aware: the backward reduce-scatters each rank's
key/value gradients back to their owner), puts them back in sequence order and runs, for every contiguous run of local query tokens
inside one document, one SDPA call against that document's keys up to the run's end with a lower-right causal
mask (`torch.nn.attention.bias.causal_lower_right`). Documents and position ids are those of the full sequence,
so the result equals one process's attention over the whole sequence.

With `flex` (what `--attn auto` takes under CP on a GPU) the local queries attend to the gathered keys in one
`flex_attention` call: a BlockMask of [local tokens x all tokens], document-causal at the queries' global
positions, so blocks that are masked out entirely (an early chunk's queries against late keys) are skipped and the
kv heads are never repeated (native GQA). The SDPA path instead repeats kv heads for its lower-right-masked runs
(the backends that take that mask have no native GQA), which saves the whole sequence's keys and values once per
query head group for the backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from trainbench.trainer.data import Batch
from trainbench.trainer.kernels.doc_attention import _expand_kv, _sdpa_context, document_block_mask, flex_attention
from trainbench.trainer.parallel.layout import CP_ATTN


@dataclass
class CPShard:
    """Where this rank's tokens sit in the micro-batch (host-side bookkeeping plus two index tensors)."""

    group: object
    rank: int
    size: int
    inv: torch.Tensor  # [B*T]: position in the rank-major gathered tokens of each token in sequence order
    # (local start, length, key start, key end) per run of local query tokens within one document; key range
    # over the flat B*T sequence order
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)
    qpos: torch.Tensor | None = None  # [n_local] flat position (over B*T) of each local token
    docs: torch.Tensor | None = None  # [B*T] document id of every token of the whole micro-batch
    block_mask: object = field(default=None, repr=False)  # flex's BlockMask: built once, used by every layer


@dataclass
class CPBatch(Batch):
    cp: CPShard | None = None
    loss_tokens: int = 0  # loss tokens of the whole (unsplit) micro-batch: the normaliser counts all of them


def zigzag_chunks(rank: int, size: int) -> tuple[int, int]:
    return rank, 2 * size - 1 - rank


def local_positions(seq_len: int, rank: int, size: int) -> torch.Tensor:
    """Positions (within a row of `seq_len`) this rank holds, ascending."""
    c = seq_len // (2 * size)
    return torch.cat([torch.arange(k * c, (k + 1) * c) for k in zigzag_chunks(rank, size)])


def flat_index(batch_rows: int, seq_len: int, rank: int, size: int) -> torch.Tensor:
    pos = local_positions(seq_len, rank, size)
    return torch.cat([b * seq_len + pos for b in range(batch_rows)])


def segments_for(cu_seqlens: list[int], idx: list[int]) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive flat indices in `idx` (ascending) cut at document bounds -> (local start, length,
    first key, key end) with the keys of the query's document from its start up to the run's end."""
    segs = []
    doc = 0
    start = 0
    n = len(idx)
    while start < n:
        g = idx[start]
        while cu_seqlens[doc + 1] <= g:
            doc += 1
        end = start + 1
        while end < n and idx[end] == idx[end - 1] + 1 and idx[end] < cu_seqlens[doc + 1]:
            end += 1
        segs.append((start, end - start, cu_seqlens[doc], idx[end - 1] + 1))
        start = end
    return segs


def shard_batch(batch: Batch, rank: int, size: int, group) -> CPBatch:
    """This rank's share of a micro-batch (tensors on the batch's device)."""
    rows, seq_len = batch.input_ids.shape
    if seq_len % (2 * size):
        raise ValueError(f"sequence length {seq_len} is not a multiple of 2 x cp = {2 * size}")
    pos = local_positions(seq_len, rank, size).to(batch.input_ids.device)
    idx = flat_index(rows, seq_len, rank, size)
    gathered = torch.cat([flat_index(rows, seq_len, r, size) for r in range(size)])
    inv = torch.argsort(gathered).to(batch.input_ids.device)
    cu = [int(x) for x in batch.cu_seqlens.tolist()]
    device = batch.input_ids.device
    shard = CPShard(
        group=group,
        rank=rank,
        size=size,
        inv=inv,
        segments=segments_for(cu, idx.tolist()),
        qpos=idx.to(device),
        docs=batch.doc_ids.reshape(-1).to(device),
    )

    def take(t: torch.Tensor) -> torch.Tensor:
        return t[:, pos].contiguous()

    return CPBatch(
        input_ids=take(batch.input_ids),
        targets=take(batch.targets),
        position_ids=take(batch.position_ids),
        loss_mask=take(batch.loss_mask),
        doc_ids=take(batch.doc_ids),
        cu_seqlens=batch.cu_seqlens,
        max_seqlen=batch.max_seqlen,
        inference_logprobs=take(batch.inference_logprobs),
        advantages=take(batch.advantages),
        cp=shard,
        loss_tokens=int(batch.loss_mask.sum()),
    )


def gather_sequence(x: torch.Tensor, shard: CPShard) -> torch.Tensor:
    """[n_local, ...] on each rank -> [N, ...] in sequence order (autograd-aware)."""
    import torch.distributed._functional_collectives as fc

    # `all_gather_single_autograd` from torch 2.12 on; earlier (2.11 on the lent GPU) the same op is
    # `all_gather_tensor_autograd`, which later versions keep as a deprecated alias
    gather = getattr(fc, "all_gather_single_autograd", None) or fc.all_gather_tensor_autograd
    return gather(x.contiguous(), 0, shard.group)[shard.inv]


def flex_cp_attention(q, k_all, v_all, shard: CPShard, scale=None) -> torch.Tensor:
    """q [n, H, D] of the local tokens, k/v [N, KV, D] of the whole sequence -> [n, H, D], one flex call."""
    if shard.block_mask is None:
        shard.block_mask = document_block_mask(shard.docs, shard.qpos)
    return flex_attention(q, k_all, v_all, shard.block_mask, scale)


def sdpa_cp_attention(q, k_all, v_all, shard: CPShard, backend="sdpa", scale=None, gqa_mode="native") -> torch.Tensor:
    """q [n, H, D] of the local tokens, k/v [N, KV, D] of the whole sequence -> [n, H, D], one SDPA call per run
    of local queries within a document."""
    from torch.nn.attention.bias import causal_lower_right

    kv_heads = k_all.shape[1]
    gqa = q.shape[1] != kv_heads
    q4 = q.unsqueeze(0).transpose(1, 2)
    k4, v4 = (t.unsqueeze(0).transpose(1, 2) for t in (k_all, v_all))
    outs = []
    with _sdpa_context(backend):
        for ls, length, ks, ke in shard.segments:
            qs, kk, vv = q4[:, :, ls : ls + length], k4[:, :, ks:ke], v4[:, :, ks:ke]
            full = ke - ks == length  # the run starts its document: plain causal
            # repeat kv heads for GQA where native GQA is not known to work (the probe said so, or the
            # lower-right causal bias path, which not every backend runs with enable_gqa)
            expand = gqa and (gqa_mode == "expand" or not full)
            if expand:
                kk, vv = (_expand_kv(t, q.shape[1] // kv_heads) for t in (kk, vv))
            if full:
                o = F.scaled_dot_product_attention(
                    qs, kk, vv, is_causal=True, scale=scale, enable_gqa=gqa and not expand
                )
            else:
                o = F.scaled_dot_product_attention(
                    qs, kk, vv, attn_mask=causal_lower_right(length, ke - ks), scale=scale
                )
            outs.append(o)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.squeeze(0).transpose(0, 1)


def cp_attention(q, k, v, shard: CPShard, backend: str = "sdpa", scale=None, gqa_mode: str = "native") -> torch.Tensor:
    """q [n, H, D], k/v [n, KV, D] of the local tokens -> attention output [n, H, D] over the whole sequence."""
    if backend == "auto" or backend not in CP_ATTN:  # layout.validate refuses these before a model is built
        raise ValueError(f"context parallelism has no {backend!r} attention")
    kv_heads = k.shape[1]
    kv = gather_sequence(torch.cat([k, v], dim=1), shard)
    k_all, v_all = kv[:, :kv_heads], kv[:, kv_heads:]
    if backend == "flex":
        return flex_cp_attention(q, k_all, v_all, shard, scale)
    return sdpa_cp_attention(q, k_all, v_all, shard, backend, scale, gqa_mode)
