"""trainbench's bench mode against a plain transformers + peft training loop, in one process on one GPU.

    python benchmarks/compare_hf.py                      # the six rows of the bar (../shared/PERFORMANCE.md)
    python benchmarks/compare_hf.py --rows qwen3-0.6b:rl-full:16384 --variants plain,bench
    python benchmarks/compare_hf.py --check-only         # bf16 loss/gradient equivalence of the fast path

Per row (model, type, sequence length) it runs, in this order:
- `plain`: what a user would write: transformers `AutoModelForCausalLM` built from the shipped config (random init,
  bf16 weights), peft LoRA r16/alpha 32 on all linear projections for LoRA rows, `attn_implementation="sdpa"`,
  gradient checkpointing (non-reentrant), fused AdamW, one sequence of `seq_len` tokens per step, loss = the
  model's own cross-entropy (`labels=input_ids`). A single causal sequence, no document mask: SDPA takes its
  fastest causal kernel (cuDNN on Hopper); a packed-document mask would push it onto the slow masked kernel.
- `liger`: the same loop after `liger_kernel.transformers.apply_liger_kernel_to_<model>()` (fused linear
  cross-entropy, RMSNorm, SwiGLU, RoPE). Liger patches transformers globally, so it runs after every plain row.
- `bench`: `trainbench.trainer.bench.run_bench` with `--impl fast` (or `--bench-impl`), same model, type and
  sequence length, bench mode's packed data (`--docs-per-seq` documents per sequence; add `--bench-docs 4,1` to
  also run one document per sequence, the same attention work as the reference loops).

TPS is tokens per second from the MEDIAN step time of the measured steps (after `--warmup` steps); MFU uses
trainbench's FLOPs/token (specs.py) and the device's peak; peak memory is `max_memory_reserved`. The table ends
with the ratio bench TPS / faster reference TPS and the bar's verdict. Before the rows, `--check` (default on)
compares the fast path's loss and gradients with transformers' on a 2-layer Qwen3-0.6B in bf16, both measured
against a float32 run of transformers (per document).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import traceback

import torch

from trainbench.trainer.specs import resolve_model

# (model, type, seq_len) -> (MFU bar %, TPS ratio bar) from ../shared/PERFORMANCE.md
BAR = {
    ("qwen3-0.6b", "sft-full", 8192): (40.0, 1.3),
    ("qwen3-0.6b", "rl-full", 16384): (45.0, 1.3),
    ("qwen3-0.6b", "rl-lora", 16384): (38.0, 1.3),
    ("qwen3-4b", "rl-lora", 16384): (45.0, 1.3),
    ("qwen3-0.6b", "rl-full", 65536): (50.0, 1.3),
    ("qwen3-4b", "rl-lora", 65536): (55.0, 1.3),
}
DEVICE = "cuda"  # --device cpu: a smoke run with tiny configs (CI); numbers mean nothing there
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def log(*a):
    print(*a, flush=True)


def is_cuda() -> bool:
    return DEVICE == "cuda"


def peak_flops() -> float:
    if not is_cuda():
        from trainbench.trainer.hardware import CPU_NOMINAL_PEAK_FLOPS

        return CPU_NOMINAL_PEAK_FLOPS
    from trainbench.trainer.hardware import peak_flops as table_peak

    return table_peak(torch.cuda.get_device_name())


def cleanup():
    gc.collect()
    if is_cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def sync():
    if is_cuda():
        torch.cuda.synchronize()


def device_name() -> str:
    return torch.cuda.get_device_name() if is_cuda() else "cpu"


def stats(step_times: list[float], tokens: int, fpt: float, peak: float) -> dict:
    med = statistics.median(step_times)
    tps = tokens / med
    return {
        "status": "ok",
        "step_time": med,
        "step_times": step_times,
        "tps": tps,
        "mfu": 100.0 * fpt * tps / peak,
        "peak_gib": torch.cuda.max_memory_reserved() / 2**30 if is_cuda() else 0.0,
    }


# --- reference loops -----------------------------------------------------------------------------------------
def apply_liger(model_type: str) -> None:
    import liger_kernel.transformers as lk

    getattr(lk, f"apply_liger_kernel_to_{model_type}")()


def reference_run(spec, typ: str, seq: int, steps: int, warmup: int, seed: int = 0) -> dict:
    from peft import LoraConfig, get_peft_model

    from trainbench.trainer.models.hf import build_model

    dev = torch.device(DEVICE)
    torch.manual_seed(seed)
    model = build_model(spec, dev, torch.bfloat16 if is_cuda() else torch.float32, "sdpa")
    model.config.use_cache = False
    if typ == "rl-lora":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, lora_dropout=0.0))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=True)
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 1)
    times = []
    try:
        for step in range(warmup + steps):
            ids = torch.randint(3, spec.vocab, (1, seq), device=dev, generator=gen)
            sync()
            t0 = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
        fpt = spec.flops_per_token(seq, 16 if typ == "rl-lora" else None)
        out = stats(times, seq, fpt, peak_flops())
        out["loss"] = float(loss.detach())
        return out
    finally:
        del model, opt, params
        cleanup()


# --- trainbench bench mode ---------------------------------------------------------------------------------------
def bench_run(model: str, typ: str, seq: int, steps: int, warmup: int, **kw) -> dict:
    from trainbench.trainer.bench import run_bench
    from trainbench.trainer.config import JobConfig

    cfg = JobConfig(
        model=model,
        type=typ,
        seq_len=seq,
        steps=steps,
        warmup_steps=warmup,
        device=DEVICE,
        metrics_port=-1,
        **kw,
    )
    try:
        res = run_bench(cfg)
    finally:
        cleanup()
    if res.get("status") != "ok":
        return {"status": "failed", "error": res.get("error")}
    measured = [r for r in res["steps"] if not r["warmup"]]
    times = [r["step_time"] for r in measured]
    med = statistics.median(times)
    tps = res["tokens_per_step"] / med
    return {
        "status": "ok",
        "step_time": med,
        "step_times": times,
        "tps": tps,
        "mfu": 100.0 * res["flops_per_token"] * tps / (res["peak_flops"] * res["world_size"]),
        "peak_gib": res.get("peak_memory_gib") or 0.0,
        "attn": res.get("attn_backend"),
        "ac": res.get("ac"),
        "impl": res.get("impl"),
        "loss": res["losses"][-1] if res.get("losses") else None,
    }


def guarded(fn, *a, **kw) -> dict:
    t0 = time.perf_counter()
    try:
        out = fn(*a, **kw)
    except torch.OutOfMemoryError as e:
        cleanup()
        out = {"status": "oom", "error": str(e).splitlines()[0][:160]}
    except Exception as e:  # one variant failing must not lose the others' numbers
        traceback.print_exc()
        cleanup()
        out = {"status": "error", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    out["wall_s"] = time.perf_counter() - t0
    return out


# --- bf16 equivalence on the GPU ----------------------------------------------------------------------------------
def gpu_check(attn: str, compile: bool, layers: int = 2, seq: int = 4096, model: str = "qwen3-0.6b") -> dict:
    """Fast path vs transformers, both bf16, each compared with transformers in float32 (per document)."""
    from trainbench.trainer.data import make_batch
    from trainbench.trainer.losses import sft_loss
    from trainbench.trainer.models.hf import build_model
    from trainbench.trainer.models.qwen3_fast import FastCausalLM, probe_gqa
    from trainbench.trainer.specs import ModelSpec

    base = resolve_model(model)
    spec = ModelSpec(base.name, base.hf_name, {**base.config, "num_hidden_layers": layers})
    dev = torch.device(DEVICE)
    torch.manual_seed(0)
    hf32 = build_model(spec, dev, torch.float32, "sdpa")
    hf32.config.use_cache = False
    batch = make_batch(1, seq, 4, spec.vocab, torch.Generator().manual_seed(5)).to(dev)
    cu = batch.cu_seqlens.tolist()

    def hf_hidden(m):
        flat = batch.input_ids.reshape(-1)
        return torch.cat(
            [m.model(input_ids=flat[None, s:e]).last_hidden_state[0] for s, e in zip(cu[:-1], cu[1:], strict=True)]
        )

    def run(m, hidden_fn, w):
        m.zero_grad(set_to_none=True)
        loss = sft_loss(hidden_fn(), w, batch.targets, batch.loss_mask, 2048)
        loss.backward()
        g = {n: p.grad.float().clone() for n, p in m.named_parameters() if p.grad is not None}
        return float(loss.detach()), g

    ref_loss, ref_g = run(hf32, lambda: hf_hidden(hf32), hf32.lm_head.weight)
    hf16 = build_model(spec, dev, torch.bfloat16, "sdpa")
    hf16.load_state_dict(hf32.state_dict())
    hf16.config.use_cache = False
    hf_loss, hf_g = run(hf16, lambda: hf_hidden(hf16), hf16.lm_head.weight)

    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp(min=1e-30))

    names = sorted(ref_g)
    hf_err = max(rel(hf_g[n], ref_g[n]) for n in names)
    out = {
        "loss_fp32": ref_loss,
        "loss_hf_bf16": hf_loss,
        "max_grad_rel_err_hf_bf16": hf_err,
        "params_compared": len(names),
        "pass": True,
    }
    for backend in attn.split(","):
        fast = FastCausalLM(spec.config).to(dev, torch.bfloat16)
        fast.load_state_dict(hf32.state_dict())
        gqa = probe_gqa(backend, dev) if backend.startswith("sdpa") and is_cuda() else "native"
        fast.configure(attn_backend=backend, compile=compile, gqa=gqa)
        f_loss, f_g = run(
            fast,
            lambda fast=fast: fast.hidden_states(
                batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen, batch.doc_ids
            ),
            fast.lm_head.weight,
        )
        fast_err = max(rel(f_g[n], ref_g[n]) for n in names)
        label = backend + ("" if gqa == "native" else "+expand-kv")
        out[f"loss_fast_bf16[{label}]"] = f_loss
        out[f"max_grad_rel_err_fast_bf16[{label}]"] = fast_err
        loss_ok = abs(f_loss - ref_loss) <= max(2 * abs(hf_loss - ref_loss), 1e-2 * abs(ref_loss))
        out["pass"] &= bool(set(f_g) == set(ref_g) and loss_ok and fast_err <= max(2 * hf_err, 2e-2))
        fast = None
    hf32 = hf16 = fast = None  # free before the next run
    cleanup()
    return out


# --- profiler ------------------------------------------------------------------------------------------------------
def profile_bench(model: str, typ: str, seq: int, out_dir: str | None, **kw) -> str:
    """Where one optimizer step of the fast path spends its GPU time (after 2 warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    from trainbench.trainer import losses
    from trainbench.trainer.config import JobConfig
    from trainbench.trainer.data import make_batches
    from trainbench.trainer.models import build_impl

    cfg = JobConfig(model=model, type=typ, seq_len=seq, device="cuda", metrics_port=-1, steps=1, warmup_steps=2, **kw)
    spec = resolve_model(model)
    dev = torch.device("cuda")
    impl = build_impl(cfg, spec, dev)
    opt = torch.optim.AdamW(impl.trainable_parameters(), lr=1e-5, fused=True)
    batch = make_batches(cfg, spec, 0)[0].to(dev)
    norm = float(batch.loss_mask.sum())

    def step():
        with impl.context():
            h = impl.hidden_states(batch)
            if typ == "sft-full":
                loss = losses.sft_loss(h, impl.lm_head_weight, batch.targets, batch.loss_mask, cfg.loss_chunk, norm)
            else:
                loss, _ = losses.rl_loss(
                    h,
                    impl.lm_head_weight,
                    batch.targets,
                    batch.loss_mask,
                    batch.inference_logprobs,
                    batch.advantages,
                    cfg.loss_chunk,
                    normalizer=norm,
                )
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60)
    if out_dir:
        docs = kw.get("docs_per_seq", 4)
        with open(os.path.join(out_dir, f"profile_{model}_{typ}_{seq}_docs{docs}.txt"), "w") as f:
            f.write(table)
    impl = opt = None
    cleanup()
    return table


# --- table ---------------------------------------------------------------------------------------------------------
def fmt(r: dict | None) -> str:
    if not r:
        return "-"
    if r["status"] != "ok":
        return r["status"].upper()
    return f"{r['tps'] / 1e3:.1f}k {r['mfu']:.1f}% {r['peak_gib']:.1f}G"


def table(results: list[dict]) -> str:
    lines = [
        "| model, type, seq | plain TPS MFU peak | liger TPS MFU peak | bench TPS MFU peak (attn, ac) | ratio | bar | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        refs = [row.get(k) for k in ("plain", "liger")]
        best = max((r["tps"] for r in refs if r and r["status"] == "ok"), default=None)
        for key in sorted(k for k in row if k.startswith("bench")):
            b = row[key]
            ratio = b["tps"] / best if (best and b["status"] == "ok") else None
            bar = BAR.get((row["model"], row["type"], row["seq"]))
            holds = "-"
            if bar and b["status"] == "ok":
                holds = "yes" if (b["mfu"] >= bar[0] and ratio is not None and ratio >= bar[1]) else "NO"
            extra = (
                f" ({b.get('attn')}, {b.get('ac')}{', ' + key if key != 'bench' else ''})"
                if b["status"] == "ok"
                else ""
            )
            lines.append(
                f"| {row['model']} {row['type']} {row['seq']} | {fmt(refs[0])} | {fmt(refs[1])} | {fmt(b)}{extra} | "
                f"{f'{ratio:.2f}x' if ratio else '-'} | {f'{bar[0]:g}% / {bar[1]:g}x' if bar else '-'} | {holds} |"
            )
    return "\n".join(lines)


def parse_rows(text: str):
    if text == "bar":
        return list(BAR)
    rows = []
    for item in text.split(","):
        m, t, s = item.split(":")
        rows.append((m, t, int(s)))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="bar", help="'bar' or model:type:seq,...")
    p.add_argument("--variants", default="plain,liger,bench")
    p.add_argument("--ref-rows", default="", help="run the reference loops on these rows only (default: all)")
    p.add_argument("--ref-steps", type=int, default=0, help="measured steps of the reference loops (default --steps)")
    p.add_argument("--ref-warmup", type=int, default=None, help="their warm-up steps (default --warmup)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bench-impl", default="fast")
    p.add_argument("--bench-attn", default="auto")
    p.add_argument("--bench-ac", default="auto")
    p.add_argument("--bench-docs", default="4", help="documents per sequence for bench runs, e.g. 4,1")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--check-only", action="store_true")
    p.add_argument(
        "--sweep",
        default="",
        help="extra bench runs on the first row (the first --bench-docs): attn/ac "
        "pairs, e.g. varlen/none; ac 'auto' lets the trainer choose",
    )
    p.add_argument("--sweep-all", action="store_true", help="run the --sweep pairs on every row")
    p.add_argument("--profile", default="", help="rows (model:type:seq[:docs],...) to profile with the fast path")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: smoke run only")
    p.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "compare_hf.json"))
    args = p.parse_args(argv)

    global DEVICE
    DEVICE = args.device
    log(f"device: {device_name()}, torch {torch.__version__}")
    rows = parse_rows(args.rows)
    variants = args.variants.split(",")
    report: dict = {"device": device_name(), "torch": torch.__version__, "rows": []}
    out_dir = os.path.dirname(os.path.abspath(args.json))

    def save():
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)

    if args.check or args.check_only:
        attn = "flex,sdpa-cudnn,varlen" if args.bench_attn == "auto" else args.bench_attn
        report["check"] = guarded(gpu_check, attn, args.compile)
        log("check:", json.dumps(report["check"]))
        save()
        if args.check_only:
            return 0 if report["check"].get("pass") else 1

    results = [{"model": m, "type": t, "seq": s} for m, t, s in rows]
    ref_rows = set(parse_rows(args.ref_rows)) if args.ref_rows else None
    ref_steps = args.ref_steps or args.steps
    ref_warmup = args.ref_warmup if args.ref_warmup is not None else args.warmup
    report["rows"] = results
    bench_kw = {"impl": args.bench_impl, "attn": args.bench_attn, "ac": args.bench_ac, "compile": args.compile}
    docs_list = args.bench_docs.split(",")

    def run_bench_rows(docs: str):
        key = "bench" if docs == docs_list[0] else f"bench-docs{docs}"
        for row in results:
            row[key] = guarded(
                bench_run, row["model"], row["type"], row["seq"], args.steps, args.warmup,
                docs_per_seq=int(docs), **bench_kw,
            )  # fmt: skip
            log(row["model"], row["type"], row["seq"], key, json.dumps(row[key]))
            save()

    # order: the main bench rows, the reference loops, then the extras (so a time limit cuts extras first)
    if "bench" in variants:
        run_bench_rows(docs_list[0])
    for variant in ("plain", "liger"):
        if variant not in variants:
            continue
        if variant == "liger":
            try:
                apply_liger("qwen3")
                apply_liger("llama")
            except ImportError as e:
                log(f"liger-kernel not importable ({e}); skipping the liger loop")
                continue
        for row in results:
            if ref_rows is not None and (row["model"], row["type"], row["seq"]) not in ref_rows:
                continue
            spec = resolve_model(row["model"])
            row[variant] = guarded(reference_run, spec, row["type"], row["seq"], ref_steps, ref_warmup)
            log(row["model"], row["type"], row["seq"], variant, json.dumps(row[variant]))
            save()
    log(table(results))
    for item in filter(None, args.profile.split(",")):
        m, t, s, *docs = item.split(":")  # model:type:seq[:documents per sequence]
        try:
            tbl = profile_bench(m, t, int(s), out_dir, impl=args.bench_impl, attn=args.bench_attn, ac=args.bench_ac,
                                compile=args.compile, docs_per_seq=int(docs[0]) if docs else 4)  # fmt: skip
            log(f"profile {item}:\n{tbl}")
        except Exception:
            traceback.print_exc()
    if "bench" in variants:
        for docs in docs_list[1:]:
            run_bench_rows(docs)
        for pair in filter(None, args.sweep.split(",")):
            attn, ac = pair.split("/")
            kw = {**bench_kw, "attn": attn, "ac": ac, "docs_per_seq": int(docs_list[0])}
            for row in results if args.sweep_all else results[:1]:
                row[f"bench-{attn}-{ac}"] = guarded(
                    bench_run, row["model"], row["type"], row["seq"], args.steps, args.warmup, **kw
                )
                log("sweep", row["model"], row["seq"], pair, json.dumps(row[f"bench-{attn}-{ac}"]))
                save()
    log(table(results))
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
