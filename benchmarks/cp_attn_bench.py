"""Context parallelism's attention, one rank's share at a time, on one GPU: what CP=2 costs in attention time and
in memory kept for the backward, before any communication (the all-gather of K/V is not part of this).

For one packed sequence of `--seq-len` tokens (`--docs` documents) and Qwen3-4B's attention shape (32 query heads,
8 kv heads, head dim 128), it times forward+backward (CUDA events, median of `--iters` after warm-up) of:
- the one-GPU reference over the whole sequence: cuDNN SDPA per document and flex with a document BlockMask;
- each CP=2 rank's share (zigzag split, `parallel/cp.shard_batch`) against the whole sequence's keys, with CP's
  SDPA path (`sdpa_cp_attention`: a lower-right causal mask and repeated kv heads where a run does not start its
  document) and its flex path (`flex_cp_attention`: one call, native GQA).

"scaling" = reference time / the slower rank's time (the step waits for it; 2.0 is perfect). "kept MiB" = memory
still allocated after the forward (what the backward needs), beyond the inputs.

    python3 benchmarks/cp_attn_bench.py --seq-len 65536 --docs 1 --docs 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainbench.trainer.data import make_batch
from trainbench.trainer.kernels import doc_attention as D
from trainbench.trainer.parallel.cp import flex_cp_attention, sdpa_cp_attention, shard_batch

H, KV, HD = 32, 8, 128


def measure(fn, inputs, iters: int) -> tuple[float, float]:
    """(median ms of forward+backward, MiB kept after the forward)."""
    times = []
    kept = 0.0
    for i in range(iters + 2):
        for t in inputs:
            t.grad = None
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        out = fn()
        kept = (torch.cuda.memory_allocated() - before) / 2**20
        out.backward(torch.ones_like(out))
        b.record()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(a.elapsed_time(b))
        del out
    return statistics.median(times), kept


def leaf(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)


def row(seq, docs, what, share, ms, kept=None, scale=None) -> None:
    """Print one table row as soon as it is measured (a run cut short still shows what it measured)."""
    k = "" if kept is None else f"{kept:,.0f}"
    s = "" if scale is None else f"{scale:.2f}x"
    print(f"| {seq} | {docs} | {what} | {share} | {ms:.1f} | {k} | {s} |", flush=True)


def run(seq_len: int, docs: int, iters: int) -> None:
    batch = make_batch(1, seq_len, docs, 1000, torch.Generator().manual_seed(0))
    q, k, v = leaf(seq_len, H, HD), leaf(seq_len, KV, HD), leaf(seq_len, KV, HD)
    bounds = [int(x) for x in batch.cu_seqlens.tolist()]
    mask = D.document_block_mask(batch.doc_ids.cuda())
    ref = {
        "cudnn": lambda: D.sdpa_per_document(q, k, v, bounds, "sdpa-cudnn"),
        "flex": lambda: D.flex_attention(q, k, v, mask),
    }
    base = {}
    for name, fn in ref.items():
        ms, kept = measure(fn, (q, k, v), iters)
        base[name] = ms
        row(seq_len, docs, f"1 GPU, {name}", "whole", ms, kept)
    kv = leaf(seq_len, 2 * KV, HD)  # as cp_attention has it: the gathered [N, 2*KV, D], sliced
    for name in ("sdpa", "flex"):
        worst = 0.0
        for rank in (0, 1):
            shard = shard_batch(batch, rank, 2, None).cp
            shard.qpos, shard.docs = shard.qpos.cuda(), shard.docs.cuda()
            ql = leaf(seq_len // 2, H, HD)

            def fn(ql=ql, shard=shard, name=name):
                k_all, v_all = kv[:, :KV], kv[:, KV:]
                if name == "flex":
                    return flex_cp_attention(ql, k_all, v_all, shard)
                return sdpa_cp_attention(ql, k_all, v_all, shard, "sdpa")

            ms, kept = measure(fn, (ql, kv), iters)
            worst = max(worst, ms)
            row(seq_len, docs, f"CP=2, {name}", f"rank {rank}", ms, kept)
        ref_ms = min(base.values())
        row(seq_len, docs, f"CP=2, {name}", "slower rank", worst, scale=ref_ms / worst)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=int, default=65536)
    p.add_argument("--docs", type=int, action="append", help="documents per sequence (repeatable; default 1)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=240.0, help="skip the remaining --docs after this many seconds")
    a = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cp_attn_bench.py times GPU kernels: it needs a CUDA device (none is visible here)")
    start = time.time()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; fwd+bwd, Qwen3-4B attention (H={H}, KV={KV})")
    print("| seq | docs | attention | share | ms | kept MiB | scaling vs fastest 1-GPU |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for docs in a.docs or [1]:
        if time.time() - start > a.budget_s:
            print(f"skipped --docs {docs}: past --budget-s")
            continue
        run(a.seq_len, docs, a.iters)


if __name__ == "__main__":
    main()
