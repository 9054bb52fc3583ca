"""Causal attention forward+backward at the bar's shapes, in the layouts the fast path uses (one GPU).

    python3 benchmarks/attn_bench.py                   # Qwen3-0.6B and -4B heads at 16k and 64k
    python3 benchmarks/attn_bench.py --seqs 65536 --docs 1,4

Per (model heads, sequence length, documents) it times one forward+backward of every variant it can run:
- `cudnn-view`: what `doc_attention.sdpa_per_document` does (q/k/v as strided [1, H, N, D] views of the flat
  [N, H, D] projections, native GQA), one call per document;
- `cudnn-contig`: the same with contiguous [1, H, N, D] copies (the copies are timed too);
- `cudnn-expand`: kv heads repeated to the query heads first;
- `flash`: SDPA's FlashAttention-2 backend; `flex`: the compiled document BlockMask path;
- `fa4`: flash-attn-4 (`flash_attn.cute`), varlen over the documents, when the package imports.
TFLOP/s counts causal attention within documents: forward 2 matmuls x 2 x sum(d^2)/2 x H x D, forward+backward
3.5 x that (FlashAttention's own convention: the backward is 5 matmuls to the forward's 2).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import traceback

import torch

from trainbench.trainer.kernels import doc_attention as da

HEADS = {"qwen3-0.6b": (16, 8), "qwen3-4b": (32, 8)}


def doc_bounds(n: int, docs: int) -> list[int]:
    """`docs` documents of uneven lengths (like bench mode's packing), multiples of 128."""
    if docs == 1:
        return [0, n]
    g = torch.Generator().manual_seed(0)
    w = torch.rand(docs, generator=g) + 0.5
    lens = (w / w.sum() * n / 128).floor().long() * 128
    lens[-1] = n - int(lens[:-1].sum())
    return [0, *torch.cumsum(lens, 0).tolist()]


def time_fwd_bwd(fn, q, k, v, reps: int = 5, warmup: int = 2) -> float:
    g = torch.randn_like(q)
    for _ in range(warmup):
        fn(q, k, v).backward(g)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(q, k, v).backward(g)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def fa4_fn(bounds):
    from flash_attn.cute import flash_attn_varlen_func  # flash-attn-4

    cu = torch.tensor(bounds, dtype=torch.int32, device="cuda")
    maxlen = max(e - s for s, e in zip(bounds[:-1], bounds[1:], strict=True))

    def fn(q, k, v):
        out = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=maxlen,
                                     max_seqlen_k=maxlen, causal=True)  # fmt: skip
        return out[0] if isinstance(out, tuple) else out

    return fn


def variants(bounds, docs_ids):
    def contig(q, k, v):
        q4, k4, v4 = (t.unsqueeze(0).transpose(1, 2).contiguous() for t in (q, k, v))
        outs = []
        with da._sdpa_context("sdpa-cudnn"):
            for s, e in zip(bounds[:-1], bounds[1:], strict=True):
                outs.append(
                    torch.nn.functional.scaled_dot_product_attention(
                        q4[:, :, s:e], k4[:, :, s:e], v4[:, :, s:e], is_causal=True, enable_gqa=True
                    )
                )
        return torch.cat(outs, 2).squeeze(0).transpose(0, 1)

    out = {
        "cudnn-view": lambda q, k, v: da.sdpa_per_document(q, k, v, bounds, "sdpa-cudnn", "native"),
        "cudnn-contig": contig,
        "cudnn-expand": lambda q, k, v: da.sdpa_per_document(q, k, v, bounds, "sdpa-cudnn", "expand"),
        "flash": lambda q, k, v: da.sdpa_per_document(q, k, v, bounds, "sdpa-flash", "native"),
    }
    mask = da.document_block_mask(docs_ids)
    out["flex"] = lambda q, k, v: da.flex_attention(q, k, v, mask)
    try:
        out["fa4"] = fa4_fn(bounds)
    except Exception as e:  # not installed, or no kernel for this GPU
        print(f"fa4 unavailable: {type(e).__name__}: {e}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="qwen3-0.6b,qwen3-4b")
    p.add_argument("--seqs", default="16384,65536")
    p.add_argument("--docs", default="1,4")
    p.add_argument("--only", default="", help="variant names to run (default: all)")
    p.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "attn_bench.json"))
    args = p.parse_args(argv)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    rows = []
    for model in args.models.split(","):
        h, kv = HEADS[model]
        for n in map(int, args.seqs.split(",")):
            for docs in map(int, args.docs.split(",")):
                bounds = doc_bounds(n, docs)
                doc_ids = torch.repeat_interleave(
                    torch.arange(docs, device="cuda"), torch.tensor(bounds).diff().to("cuda")
                )
                fwd = sum(2 * 2 * (e - s) ** 2 / 2 * h * 128 for s, e in zip(bounds[:-1], bounds[1:], strict=True))
                q = torch.randn(n, h, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                k = torch.randn(n, kv, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                v = torch.randn(n, kv, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for name, fn in variants(bounds, doc_ids).items():
                    if args.only and name not in args.only.split(","):
                        continue
                    row = {"model": model, "seq": n, "docs": docs, "variant": name}
                    try:
                        t = time_fwd_bwd(fn, q, k, v)
                        row.update(ms=round(t * 1e3, 2), tflops=round(3.5 * fwd / t / 1e12, 1))
                    except Exception as e:
                        row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                        traceback.print_exc()
                    q.grad = k.grad = v.grad = None
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                del q, k, v
                torch.cuda.empty_cache()
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    print("| model | seq | docs | " + " | ".join(sorted({r["variant"] for r in rows})) + " |")
    keys = sorted({(r["model"], r["seq"], r["docs"]) for r in rows})
    names = sorted({r["variant"] for r in rows})
    print("|---|---|---|" + "---|" * len(names))
    for key in keys:
        cells = []
        for name in names:
            r = next((r for r in rows if (r["model"], r["seq"], r["docs"]) == key and r["variant"] == name), None)
            cells.append("-" if r is None else r.get("error", f"{r.get('ms')} ms / {r.get('tflops')} TF")[:40])
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
