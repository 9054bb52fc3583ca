"""`--type calibrate`: the ceilings of the device it runs on, the denominators of "% of floor" (docs/verdicts.md).

- GEMM: C = A @ B in the trainer's dtype (bf16 on a GPU, fp32 on the CPU) for large squares and the shapes of a
  model's projections ([tokens, hidden] x [hidden, out]); FLOPs = 2*m*n*k.
- attention: torch SDPA, causal, head_dim 128, one long sequence (`--seq-len`; the CPU caps it at CPU_SEQ), each
  SDPA backend that runs here (GPU: flash, cuDNN, efficient, and flash-attn-4 where it imports, which `--attn auto`
  then runs; CPU: what SDPA picks); FLOPs forward =
  2*2*b*h*s*s*d/2 (`specs.causal_attention_fwd_flops`), forward + backward = 3x that, the accounting of
  `specs.causal_attention_flops` that the floor prices.
Each time is the best of `--steps` runs after `--warmup-steps` (CUDA events on a GPU, perf_counter on the CPU).
The ceilings: `gemm_tflops` = the best GEMM, `attention_tflops` = the best backend's forward + backward.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from prometheus_client import Gauge

from trainbench.trainer import contract as c
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.context import pick_device, resolve_peak
from trainbench.trainer.distributed import env_world
from trainbench.trainer.hardware import UnknownDeviceError
from trainbench.trainer.kernels import doc_attention
from trainbench.trainer.metrics import Exporter
from trainbench.trainer.models.base import resolve_dtype
from trainbench.trainer.result import base_result, environment
from trainbench.trainer.specs import causal_attention_fwd_flops

HEAD_DIM = 128
CPU_SEQ = 512  # attention sequence on the CPU (tests, laptops): a 16k causal attention would take minutes there
# (label, m, n, k): m tokens x k in -> n out; the model shapes are Qwen3-8B's projections and MLP at 16k tokens
GPU_GEMMS = (
    ("square 4096", 4096, 4096, 4096),
    ("square 8192", 8192, 8192, 8192),
    ("qkv/o 16k x 4096 x 4096", 16384, 4096, 4096),
    ("mlp up 16k x 4096 -> 12288", 16384, 12288, 4096),
    ("mlp down 16k x 12288 -> 4096", 16384, 4096, 12288),
)
CPU_GEMMS = (("square 256", 256, 256, 256), ("square 512", 512, 512, 512), ("mlp 1024 x 256 -> 768", 1024, 768, 256))
GPU_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def best_seconds(fn, device: torch.device, warmup: int, iters: int) -> float:
    """The shortest of `iters` timed calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    best = math.inf
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return best


def measure_gemms(device, dtype, warmup: int, iters: int) -> list[dict]:
    out = []
    for label, m, n, k in GPU_GEMMS if device.type == "cuda" else CPU_GEMMS:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        s = best_seconds(lambda a=a, b=b: a @ b, device, warmup, iters)
        out.append({"label": label, "m": m, "n": n, "k": k, "seconds": s, "tflops": 2 * m * n * k / s / 1e12})
        del a, b
    return out


def measure_attention(device, dtype, seq_len: int, warmup: int, iters: int) -> list[dict]:
    """Forward and forward + backward TFLOP/s of causal SDPA per backend (an entry with `error` where one cannot
    run these inputs)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cuda = device.type == "cuda"
    b, h, s = (1, 16, seq_len) if cuda else (1, 4, min(seq_len, CPU_SEQ))
    fwd_flops = causal_attention_fwd_flops(b, h, s, HEAD_DIM)
    q, k, v = (torch.randn(b, h, s, HEAD_DIM, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def train():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

    out = []
    if cuda and doc_attention.fa4_usable(device):  # what `--attn auto` runs where it imports: its ceiling counts
        out.append(measure_fa4(device, dtype, b, h, s, fwd_flops, warmup, iters))
    for name, member in GPU_BACKENDS.items() if cuda else (("sdpa", None),):
        entry = {"backend": name, "batch": b, "heads": h, "seq_len": s, "head_dim": HEAD_DIM}
        try:
            with sdpa_kernel([getattr(SDPBackend, member)]) if member else torch.enable_grad():
                t_fwd = best_seconds(fwd, device, warmup, iters)
                t_train = best_seconds(train, device, warmup, iters)
            entry.update(fwd_tflops=fwd_flops / t_fwd / 1e12, train_tflops=3 * fwd_flops / t_train / 1e12)
        except RuntimeError as e:  # "No available kernel" (a backend this GPU or dtype lacks)
            entry["error"] = " ".join(str(e).split())[:200]
        q.grad = k.grad = v.grad = None
        out.append(entry)
    return out


def measure_fa4(device, dtype, b: int, h: int, s: int, fwd_flops: float, warmup: int, iters: int) -> dict:
    """flash-attn-4 (varlen, one document of s tokens) at the SDPA entries' shape; [T, H, D] as the fast path calls it."""
    entry = {"backend": "fa4", "batch": b, "heads": h, "seq_len": s, "head_dim": HEAD_DIM}
    q, k, v = (torch.randn(b * s, h, HEAD_DIM, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    cu, grad = torch.tensor([0, b * s], device=device, dtype=torch.int32), torch.randn_like(q)
    try:
        with torch.no_grad():
            t_fwd = best_seconds(lambda: doc_attention.fa4_attention(q, k, v, cu, s), device, warmup, iters)
        t_train = best_seconds(
            lambda: doc_attention.fa4_attention(q, k, v, cu, s).backward(grad), device, warmup, iters
        )
        entry.update(fwd_tflops=fwd_flops / t_fwd / 1e12, train_tflops=3 * fwd_flops / t_train / 1e12)
    except Exception as e:  # a JIT or launch failure of the CuTe DSL kernels: recorded, the SDPA entries still count
        entry["error"] = " ".join(f"{type(e).__name__}: {e}".split())[:200]
    return entry


def run_calibrate(cfg: JobConfig) -> tuple[dict, Exporter | None]:
    """Measure this device's ceilings; (result, rank 0's exporter still serving, state done)."""
    world = env_world()
    if world.size > 1:
        raise BadConfig(f"--type calibrate measures one device: run it as one process, not {world.size} ranks")
    device = pick_device(cfg, world.local_rank)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.dry_run:  # what it would measure, nothing allocated
        cuda = device.type == "cuda"
        result = base_result(cfg, None, 1)
        result["config"]["model"] = c.CALIBRATE_TYPE
        gemms = [{"label": g[0], "m": g[1], "n": g[2], "k": g[3]} for g in (GPU_GEMMS if cuda else CPU_GEMMS)]
        seq = cfg.seq_len if cuda else min(cfg.seq_len, CPU_SEQ)
        backends = (["fa4"] if doc_attention.fa4_usable(device) else []) + list(GPU_BACKENDS) if cuda else ["sdpa"]
        attention = {"backends": backends, "seq_len": seq, "head_dim": HEAD_DIM}
        result.update(status="dry-run", device=device.type, dtype=str(dtype), gemms=gemms, attention=attention)
        return result, None
    try:
        peak, peak_source = resolve_peak(cfg, device)
    except UnknownDeviceError:  # ceilings need no data-sheet peak; "% of peak" is then left out
        peak, peak_source = None, None
    exporter = None
    if cfg.metrics.metrics_port >= 0:
        m = cfg.metrics
        exporter = Exporter({"run": m.run, "case": m.case, "model": c.CALIBRATE_TYPE, "type": cfg.type, "pool": m.pool})
        print(c.METRICS_PORT_LINE_PREFIX + str(exporter.serve(m.metrics_port)), flush=True)
        exporter.set_state("measuring")
    try:
        warmup, iters = max(1, cfg.warmup_steps), cfg.steps
        gemms = measure_gemms(device, dtype, warmup, iters)
        attention = measure_attention(device, dtype, cfg.seq_len, warmup, iters)
    except BaseException:
        if exporter is not None:
            exporter.set_state("failed")
            exporter.close()
        raise
    ran = [a for a in attention if "train_tflops" in a]
    if not ran:
        raise BadConfig("no SDPA backend could run causal attention here: " + attention[0].get("error", ""))
    best_attn = max(ran, key=lambda a: a["train_tflops"])
    cal = {
        "dtype": str(dtype).removeprefix("torch."),
        "gemms": gemms,
        "attention": attention,
        "gemm_tflops": max(g["tflops"] for g in gemms),
        "attention_tflops": best_attn["train_tflops"],
        "attention_fwd_tflops": max(a["fwd_tflops"] for a in ran),
        "attention_backend": best_attn["backend"],
    }
    if exporter is not None:
        gauge = Gauge(
            c.M_CAL_TFLOPS, "Measured TFLOP/s of one device", [*c.LABELS, "kernel"], registry=exporter.registry
        )
        for g in gemms:
            gauge.labels(**exporter.labels, kernel=f"gemm {g['label']}").set(g["tflops"])
        for a in ran:
            gauge.labels(**exporter.labels, kernel=f"attention {a['backend']} fwd").set(a["fwd_tflops"])
            gauge.labels(**exporter.labels, kernel=f"attention {a['backend']} fwd+bwd").set(a["train_tflops"])
        gauge.labels(**exporter.labels, kernel="gemm").set(cal["gemm_tflops"])
        gauge.labels(**exporter.labels, kernel="attention").set(cal["attention_tflops"])
        exporter.set_state("done")
    result = base_result(cfg, None, 1)
    result["config"]["model"] = c.CALIBRATE_TYPE
    result.update(
        device=device.type,
        peak_flops=peak,
        peak_flops_source=peak_source,
        calibration=cal,
        environment=environment(device),
    )
    return result, exporter


def table(result: dict) -> str:
    """The ceilings for people: GEMMs, attention per backend, each as TFLOP/s and % of the peak."""
    cal, peak = result["calibration"], result.get("peak_flops")
    env = result.get("environment") or {}

    def pct(tflops):
        return f"{100 * tflops * 1e12 / peak:5.1f}%" if peak else "    –"

    where = f"{env.get('gpu_name') or 'cpu'} ({cal['dtype']})"
    where += f", peak {peak / 1e12:.4g} TF ({result.get('peak_flops_source')})" if peak else ", no peak known"
    rows = [where, "", f"{'GEMM (m x n x k)':<34} {'TFLOP/s':>8} {'of peak':>8}"]
    rows += [f"{g['label']:<34} {g['tflops']:8.4g} {pct(g['tflops']):>8}" for g in cal["gemms"]]
    a0 = cal["attention"][0]
    rows += ["", f"attention causal b={a0['batch']} h={a0['heads']} s={a0['seq_len']} d={a0['head_dim']}"]
    rows += [f"{'backend':<14} {'fwd TF':>8} {'of peak':>8} {'fwd+bwd TF':>11} {'of peak':>8}"]
    for a in cal["attention"]:
        if "error" in a:
            rows.append(f"{a['backend']:<14} cannot run: {a['error'][:80]}")
        else:
            rows.append(
                f"{a['backend']:<14} {a['fwd_tflops']:8.4g} {pct(a['fwd_tflops']):>8} "
                f"{a['train_tflops']:11.4g} {pct(a['train_tflops']):>8}"
            )
    rows += [
        "",
        f"ceilings: GEMM {cal['gemm_tflops']:.4g} TF ({pct(cal['gemm_tflops']).strip()} of peak), attention "
        f"{cal['attention_tflops']:.4g} TF fwd+bwd ({cal['attention_backend']}, {pct(cal['attention_tflops']).strip()})",
    ]
    return "\n".join(rows)
