"""Issue 18 micro-benchmarks (GPU): the MoE expert compute and the decode paths, each against its baseline.

  python3 benchmarks/moe_gen_bench.py moe [--tokens 16384]   # one Qwen3-30B-A3B MoE block: loop vs grouped
  python3 benchmarks/moe_gen_bench.py gen [--batches 1,128]  # qwen3-0.6b decode: eager vs static variants

`moe`: the sparse block of Qwen3-30B-A3B (hidden 2048, 128 experts, 768 per expert, top-8) on `--tokens` random
bf16 tokens (std-0.02 weights): per implementation (TRAINBENCH_MOE loop = the original, grouped) the first
forward+backward (cold), the relative error of the output and the input gradient against the loop computed in
float32, and the median of timed forwards / forward+backward with frozen experts (LoRA) / with expert weight
gradients (full fine-tuning), CUDA events; the grouped path also runs under torch.cuda.set_sync_debug_mode
("error"), which raises at any host sync.

`gen`: qwen3-0.6b (random weights, bf16), prompt 512, 128 new tokens, T=1: decode tokens/s and bandwidth use
(bytes as generate.decode_bytes) per batch size for the transformers loop (eager, the original) and the static
decoder as graph-only, compiled+graph (SDPA attention) and compiled+graph (GEMM attention); the measured
device-to-device copy bandwidth is printed as the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch


def timed(fn, reps=10, warm=2):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times), min(times), max(times)


def rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def moe_bench(args, out):
    from trainbench.trainer.models import moe
    from trainbench.trainer.models.moe import SparseMoeBlock, set_moe_impl
    from trainbench.trainer.specs import resolve_model

    dev = torch.device("cuda")
    cfg = resolve_model("qwen3-30b-a3b").config
    torch.manual_seed(0)
    block = SparseMoeBlock(cfg).to(dev, torch.bfloat16)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.02)
    n, hdim, k = args.tokens, cfg["hidden_size"], cfg["num_experts_per_tok"]
    inter = cfg["moe_intermediate_size"]
    flops_fwd = 2 * n * k * 3 * hdim * inter  # expert GEMMs only
    xs = [torch.randn(n, hdim, device=dev, dtype=torch.bfloat16) for _ in range(3)]
    rows = {}

    def fwd_bwd(x, experts_grad):
        for p in (block.experts.gate_up_proj, block.experts.down_proj):
            p.requires_grad_(experts_grad)
        x = x.detach().requires_grad_(True)
        y = block(x)
        y.backward(torch.ones_like(y))
        block.zero_grad(set_to_none=True)
        return x.grad

    # float32 reference (the loop on upcast weights)
    ref_block = SparseMoeBlock(cfg).to(dev, torch.float32)
    ref_block.load_state_dict({kk: v.float() for kk, v in block.state_dict().items()})
    set_moe_impl("loop")
    xr = xs[0].float().requires_grad_(True)
    yr = ref_block(xr)
    g = torch.randn_like(yr)
    (yr * g).sum().backward()
    del ref_block
    for impl in ("loop", "grouped"):
        set_moe_impl(impl)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fwd_bwd(xs[1], False)
        torch.cuda.synchronize()
        cold = time.perf_counter() - t0
        x = xs[0].detach().requires_grad_(True)
        y = block(x)
        (y.float() * g).sum().backward()
        err_y, err_dx = rel(y, yr), rel(x.grad, xr.grad)
        it = iter(range(10**9))

        def fwd(it=it):
            with torch.no_grad():
                block(xs[next(it) % 3])

        t_f = timed(fwd)
        t_fb = timed(lambda it=it: fwd_bwd(xs[next(it) % 3], False))
        t_fbw = timed(lambda it=it: fwd_bwd(xs[next(it) % 3], True))
        rows[impl] = dict(
            cold_fwd_bwd_s=cold,
            rel_err_y=err_y,
            rel_err_dx=err_dx,
            fwd_s=t_f,
            fwd_bwd_frozen_s=t_fb,
            fwd_bwd_full_s=t_fbw,
            expert_fwd_tflops=flops_fwd / t_f[0] / 1e12,
        )
    set_moe_impl("grouped")
    torch.cuda.set_sync_debug_mode("error")
    try:
        fwd_bwd(xs[2], True)
        torch.cuda.synchronize()
        rows["grouped"]["host_syncs"] = "none (set_sync_debug_mode=error passed)"
    except RuntimeError as e:
        rows["grouped"]["host_syncs"] = f"sync: {str(e)[:200]}"
    finally:
        torch.cuda.set_sync_debug_mode(0)
    a = block(xs[2]).detach()
    b = block(xs[2]).detach()
    rows["grouped"]["deterministic"] = bool(torch.equal(a, b))
    print(f"MoE block qwen3-30b-a3b, {n} tokens, bf16, {torch.cuda.get_device_name()}, MOE_IMPL={moe.MOE_IMPL}")
    print(f"{'impl':8} {'cold s':>8} {'fwd ms':>8} {'f+b frz ms':>11} {'f+b full ms':>12} {'TF/s fwd':>9} "
          f"{'err y':>8} {'err dx':>8}")  # fmt: skip
    for impl, r in rows.items():
        print(
            f"{impl:8} {r['cold_fwd_bwd_s']:8.3f} {r['fwd_s'][0] * 1e3:8.2f} {r['fwd_bwd_frozen_s'][0] * 1e3:11.2f} "
            f"{r['fwd_bwd_full_s'][0] * 1e3:12.2f} {r['expert_fwd_tflops']:9.1f} {r['rel_err_y']:8.1e} "
            f"{r['rel_err_dx']:8.1e}"
        )
    lo, gr = rows["loop"], rows["grouped"]
    print(
        f"grouped vs loop: fwd {lo['fwd_s'][0] / gr['fwd_s'][0]:.2f}x, f+b frozen "
        f"{lo['fwd_bwd_frozen_s'][0] / gr['fwd_bwd_frozen_s'][0]:.2f}x, f+b full "
        f"{lo['fwd_bwd_full_s'][0] / gr['fwd_bwd_full_s'][0]:.2f}x; {gr['host_syncs']}; deterministic "
        f"{gr['deterministic']}"
    )
    with open(os.path.join(out, "moe_block.json"), "w") as f:
        json.dump(rows, f, indent=1)


def gen_bench(args, out):
    from trainbench.trainer import generate as G
    from trainbench.trainer.config import parse_args
    from trainbench.trainer.kernels.static_decode import StaticDecoder
    from trainbench.trainer.specs import resolve_model

    dev = torch.device("cuda")
    bufs = [torch.randn(2**30, device=dev), torch.empty(2**30, device=dev)]  # 4 GiB copied: read + write
    t = timed(lambda: bufs[1].copy_(bufs[0]), reps=10)[0]
    copy_bw = 2 * bufs[0].numel() * 4 / t
    bufs.clear()
    cfg = parse_args(["--type", "generate", "--model", "qwen3-0.6b", "--seq-len", str(args.prompt)])
    spec = resolve_model("qwen3-0.6b")
    torch.manual_seed(0)
    model, _ = G.build_eval_model(cfg, spec, dev)
    P, N = args.prompt, args.new_tokens
    peak = 4.8e12
    rows = []
    sync = torch.cuda.synchronize
    variants = [
        ("eager", None),
        ("graph", dict(compile=False, graphs=True)),
        ("compile+graph sdpa", dict(compile=True, graphs=True, attn="sdpa")),
        ("compile+graph mm", dict(compile=True, graphs=True, attn="mm")),
    ]
    with torch.inference_mode():
        for B in [int(b) for b in args.batches.split(",")]:
            prompt = torch.randint(3, spec.vocab, (1, P), device=dev).expand(B, P).contiguous()
            for name, kw in variants:
                try:
                    t0 = time.perf_counter()
                    if kw is None:
                        run = lambda n, p=prompt: G.decode(model, p, n, eos=[], temperature=1.0, sync=sync)  # noqa: E731
                    else:
                        dec = StaticDecoder(model, B, P + N, **kw)
                        run = lambda n, d=dec, p=prompt: G.decode_static(d, p, n, eos=[], temperature=1.0, sync=sync)  # noqa: E731
                    run(4)
                    setup = time.perf_counter() - t0
                    outs = [run(N) for _ in range(args.reps)]
                except Exception as e:  # noqa: BLE001 - report the variant, go on
                    print(f"{name} batch {B}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
                    rows.append(dict(variant=name, batch=B, error=str(e)[:300]))
                    continue
                tps = statistics.median((o.counted - B) / o.decode_s for o in outs)
                step = statistics.median(o.decode_s / o.decode_steps for o in outs)
                byt = G.decode_bytes(spec, 2, B, P, outs[0].decode_steps)
                bw = statistics.median(byt / o.decode_s for o in outs)
                ttft = statistics.median(o.ttft_s for o in outs)
                rows.append(
                    dict(variant=name, batch=B, tps=tps, step_ms=step * 1e3, bw_pct=100 * bw / peak,
                         bw_pct_of_copy=100 * bw / copy_bw, ttft_ms=ttft * 1e3, setup_s=setup)
                )  # fmt: skip
                print(f"{name} batch {B}: {tps:.1f} tok/s, step {step * 1e3:.3f} ms, BW {100 * bw / peak:.1f}% "
                      f"(setup {setup:.1f} s)", flush=True)  # fmt: skip
                dec = None
                torch.cuda.empty_cache()
    print(
        f"\ndecode qwen3-0.6b P={P} N={N} T=1, {torch.cuda.get_device_name()}; copy bandwidth {copy_bw / 1e12:.2f} TB/s"
    )
    print(
        f"{'variant':20} {'B':>4} {'tok/s':>9} {'step ms':>8} {'BW % 4.8T':>9} {'% copy':>7} {'TTFT ms':>8} {'setup s':>8}"
    )
    base = {r["batch"]: r["tps"] for r in rows if r["variant"] == "eager" and "tps" in r}
    for r in rows:
        if "tps" not in r:
            print(f"{r['variant']:20} {r['batch']:>4} failed")
            continue
        print(
            f"{r['variant']:20} {r['batch']:>4} {r['tps']:9.1f} {r['step_ms']:8.3f} {r['bw_pct']:9.1f} "
            f"{r['bw_pct_of_copy']:7.1f} {r['ttft_ms']:8.2f} {r['setup_s']:8.1f}  x{r['tps'] / base[r['batch']]:.1f}"
        )
    with open(os.path.join(out, "gen_variants.json"), "w") as f:
        json.dump(dict(copy_bw=copy_bw, rows=rows), f, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("moe", "gen"))
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--batches", default="1,128")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("moe_gen_bench.py needs a CUDA GPU")
    (moe_bench if args.what == "moe" else gen_bench)(args, args.out)


if __name__ == "__main__":
    main()
