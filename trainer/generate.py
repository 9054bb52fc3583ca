"""Benchmark type `generate`: KV-cache decoding speed of a model build (`--type generate`).

The model is the transformers build bench mode trains (`models/hf.build_model`, random init or `--weights`), in
eval mode under `torch.inference_mode`. Our own decoding loop (`decode`) over a transformers `DynamicCache`:

- prefill: one forward over the prompt (`--seq-len` tokens, the same prompt for every row: B samples of one
  prompt, as a sampler of k completions does), logits of the last position only;
- each row samples its own next token (`torch.multinomial` over the row's distribution, `--temperature`; 0 is
  greedy): nothing is copied from row 0 (nanochat's "token broadcasting" bug), the result records how many
  distinct first tokens the rows drew;
- decode: one token per step for every row until `--new-tokens` or until every row has produced an EOS token
  (the config's `eos_token_id`; checked every EOS_CHECK_EVERY steps, a host sync); a row that finished is fed
  EOS and its later tokens are not counted.

Per batch size (`--gen-batch-sizes`, default 1,8,32,128; a warm-up generation, then `--steps` measured ones):
- prefill tokens/s = B * P / prefill time; time to first token = prefill + first sampling, synchronised;
- decode tokens/s = counted tokens after the first / decode time; decode step time = decode time / steps;
- prefill MFU = (2 * (N_active - LM head) + attention forward FLOPs/token + 2 * LM head / P) * prefill tokens/s /
  peak FLOP/s: the attention term is a third of the training formula's 12 * L * H * q * P (forward only), and the
  LM head runs for the last position of each row only;
- decode bandwidth utilisation = bytes read per step (weights: N_active parameters at the run's dtype, plus the
  K and V cache of every row up to the step's context) / step time / peak memory bandwidth (`hardware.py`).
  For a mixture of experts N_active counts the routed experts of one token: at large batches more experts are
  read, so the figure is a lower bound there.

Decode path (env TRAINBENCH_DECODE): `auto` (default) runs the rows above through the static-KV-cache decoder
with CUDA graphs (`kernels/static_decode.py`, gpt-fast style: compiled layers, one graph launch per step) on
CUDA for the dense models it covers, and the transformers loop below otherwise; `static` forces the static
decoder (on the CPU without compile and graphs), `graph` the static decoder with graphs but no compile, `eager`
the transformers loop. When the static decoder runs, each batch size also runs the transformers loop once
(`eager_decode_tps`, the comparison).

Then greedy decoding of `--new-tokens` tokens at `--no-cache-batch` rows runs twice, with the cache and without it
(every step re-runs the forward over the whole sequence): the speed-up and whether both gave the same tokens.
Identical tokens are not expected in bf16: the two paths round differently (other GEMM shapes), and greedy
decoding flips at a near-tie and then follows another continuation. So the comparison is also made on the same
tokens (teacher-forced): the no-cache forward over prompt + the cached run's tokens gives the logits of every
step, compared with the cached run's logits (`logits_rel_err`, `top1_agreement`: how often the no-cache argmax
is the token the cached run took), and `first_divergence` with the no-cache top-1/top-2 gap there (a gap within
the logit error is a rounding tie, not a cache bug). The static decoder is checked the same way against the
transformers cached run (`static_vs_cache`).
The headline `metrics` (compared against baselines like the training ones) are those of the largest batch size
that ran: tps = decode tokens/s, mfu = prefill MFU, step_time = decode step time.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import torch

from trainbench.trainer import attention
from trainbench.trainer import contract as c
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.context import RunContext
from trainbench.trainer.hardware import CPU_NOMINAL_BANDWIDTH, peak_bandwidth
from trainbench.trainer.models.base import resolve_dtype
from trainbench.trainer.models.hf import build_model, load_weights
from trainbench.trainer.power import open_meter
from trainbench.trainer.result import base_result, classify_error, environment
from trainbench.trainer.result import summary as _summary
from trainbench.trainer.specs import ModelSpec

FIRST_TOKEN_ID = 3
EOS_CHECK_EVERY = 8  # decode steps between checks whether every row has finished (each check syncs the host)
DECODE_PATHS = ("auto", "static", "graph", "eager")


@dataclass
class GenOut:
    tokens: torch.Tensor  # [B, n] generated ids (EOS repeated after a row's EOS)
    lengths: torch.Tensor  # [B] counted tokens per row (up to and including its first EOS)
    prefill_s: float
    ttft_s: float
    decode_s: float
    decode_steps: int  # forwards after the prefill
    logits: list = field(default_factory=list)  # [B, V] float32 per generated token (keep_logits=True only)

    @property
    def counted(self) -> int:
        return int(self.lengths.sum())


def eos_ids(spec: ModelSpec) -> list[int]:
    e = spec.config.get("eos_token_id")
    if e is None:
        return []
    return [int(x) for x in (e if isinstance(e, list) else [e])]


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row, each row drawn from its own distribution: [B, V] -> [B]."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def decode(
    model,
    prompt: torch.Tensor,
    new_tokens: int,
    *,
    eos: list[int],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    sync=lambda: None,
    keep_logits: bool = False,
) -> GenOut:
    """Generate up to `new_tokens` tokens for each row of `prompt` [B, P] (see the module doc)."""
    from transformers import DynamicCache

    B = prompt.shape[0]
    device = prompt.device
    eos_t = torch.tensor(eos or [-1], device=device)
    fill = eos[0] if eos else 0
    cache = DynamicCache(config=model.config) if use_cache else None
    sync()
    t0 = time.perf_counter()
    out = model(input_ids=prompt, past_key_values=cache, use_cache=use_cache, logits_to_keep=1)
    sync()
    t_prefill = time.perf_counter()
    kept = [out.logits[:, -1].float()] if keep_logits else []
    nxt = sample(out.logits[:, -1], temperature, generator)
    finished = torch.isin(nxt, eos_t)
    lengths = torch.ones(B, dtype=torch.long, device=device)
    toks = [nxt]
    sync()
    t_first = time.perf_counter()
    steps = 0
    seq = prompt
    for i in range(1, new_tokens):
        if i % EOS_CHECK_EVERY == 1 and bool(finished.all()):  # a host sync: not at every step
            break
        if use_cache:
            out = model(input_ids=nxt[:, None], past_key_values=cache, use_cache=True)
        else:
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            out = model(input_ids=seq, use_cache=False, logits_to_keep=1)
        steps += 1
        if keep_logits:
            kept.append(out.logits[:, -1].float())
        new = sample(out.logits[:, -1], temperature, generator)
        new = torch.where(finished, torch.full_like(new, fill), new)
        lengths += (~finished).long()
        finished = finished | torch.isin(new, eos_t)
        nxt = new
        toks.append(nxt)
    sync()
    t_end = time.perf_counter()
    return GenOut(
        tokens=torch.stack(toks, dim=1),
        lengths=lengths,
        prefill_s=t_prefill - t0,
        ttft_s=t_first - t0,
        decode_s=t_end - t_first,
        decode_steps=steps,
        logits=kept,
    )


def decode_static(
    dec,
    prompt: torch.Tensor,
    new_tokens: int,
    *,
    eos: list[int],
    temperature: float = 1.0,
    sync=lambda: None,
    keep_logits: bool = False,
    force: torch.Tensor | None = None,
) -> GenOut:
    """`decode` through a `kernels.static_decode.StaticDecoder` built for this batch size (same rows, EOS
    handling and timing points). Sampling draws from the default generator (the one CUDA graphs support).
    `force` [B, n]: feed these tokens instead of the sampled ones (teacher forcing, for logit comparisons)."""
    B, P = prompt.shape
    if P + new_tokens > dec.max_len:
        raise ValueError(f"{P} + {new_tokens} tokens do not fit the static cache of {dec.max_len} positions")
    sync()
    t0 = time.perf_counter()
    logits = dec.prefill(prompt)
    sync()
    t_prefill = time.perf_counter()
    kept = [logits] if keep_logits else []
    nxt = logits.argmax(dim=-1) if temperature == 0 else _race(logits, temperature)
    if force is not None:
        nxt = force[:, 0]
    dec.start(nxt, P, eos, temperature)
    toks = [nxt]
    sync()
    t_first = time.perf_counter()
    steps = 0
    for i in range(1, new_tokens):
        if i % EOS_CHECK_EVERY == 1 and bool(dec.finished.all()):  # a host sync: not at every step
            break
        out = dec.step()
        steps += 1
        if keep_logits:
            kept.append(out.clone())
        if force is not None:
            dec.tok.copy_(force[:, i])
        toks.append(dec.tok.clone())
    sync()
    t_end = time.perf_counter()
    return GenOut(
        tokens=torch.stack(toks, dim=1),
        lengths=dec.lengths.clone(),
        prefill_s=t_prefill - t0,
        ttft_s=t_first - t0,
        decode_s=t_end - t_first,
        decode_steps=steps,
        logits=kept,
    )


def _race(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1)


def decode_path(model, device) -> str:
    """The decode path of this run: TRAINBENCH_DECODE, with `auto` resolved (see the module doc)."""
    from trainbench.trainer.kernels.static_decode import supports

    path = os.environ.get("TRAINBENCH_DECODE", "auto")
    if path not in DECODE_PATHS:
        raise BadConfig(f"TRAINBENCH_DECODE={path!r}: choose from {', '.join(DECODE_PATHS)}")
    why = supports(model)
    if path == "auto":
        return "static" if device.type == "cuda" and why is None else "eager"
    if path != "eager" and why is not None:
        raise BadConfig(f"TRAINBENCH_DECODE={path}: the static decoder does not run {why}")
    return path


def make_static(model, batch: int, max_len: int, path: str, device):
    from trainbench.trainer.kernels.static_decode import StaticDecoder

    cuda = device.type == "cuda"
    return StaticDecoder(model, batch, max_len, compile=cuda and path == "static", graphs=cuda)


def logit_agreement(ref_logits: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor) -> dict:
    """ref/logits [B, n, V] over the same tokens [B, n] (teacher-forced): relative error, max |diff|, how often
    ref's argmax is the token taken, and the smallest top-1/top-2 gap of ref where it is not."""
    ref, out = ref_logits.double(), logits.double()
    agree = ref.argmax(-1) == tokens
    top2 = ref.topk(2, dim=-1).values
    gaps = (top2[..., 0] - top2[..., 1])[~agree]
    return {
        "logits_rel_err": float((out - ref).norm() / ref.norm()),
        "logits_max_abs_diff": float((out - ref).abs().max()),
        "top1_agreement": float(agree.float().mean()),
        "max_gap_where_top1_differs": float(gaps.max()) if gaps.numel() else None,
    }


def nocache_logits(model, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Logits [B, n, V] (float32) of every generated position from one no-cache forward over prompt + tokens."""
    n = tokens.shape[1]
    seq = torch.cat([prompt, tokens[:, :-1]], dim=1)
    return model(input_ids=seq, use_cache=False, logits_to_keep=n).logits.float()


def kv_bytes_per_token(spec: ModelSpec, elem: int) -> int:
    """K and V cache bytes of one token over all layers."""
    return 2 * spec.layers * spec.kv_heads * spec.head_dim * elem


def decode_bytes(spec: ModelSpec, elem: int, batch: int, prompt_len: int, steps: int) -> float:
    """Bytes a decode of `steps` forwards reads: the active weights once per step, each row's K/V up to its context."""
    weights = spec.n_active() * elem * steps
    contexts = steps * prompt_len + steps * (steps + 1) / 2  # the step i reads P + i positions
    return weights + kv_bytes_per_token(spec, elem) * batch * contexts


def prefill_flops_per_token(spec: ModelSpec, prompt_len: int) -> float:
    """Forward FLOPs per prompt token: 2 x the active projections, attention's forward (a third of the training
    formula's), and the LM head once per row (only the last position's logits are computed)."""
    head = spec.hidden * spec.vocab
    return 2 * (spec.n_active() - head) + spec.attention_flops_per_token(prompt_len) / 3 + 2 * head / prompt_len


def resolve_bandwidth(cfg: JobConfig, device) -> tuple[float, str]:
    if cfg.peak_bandwidth_gbps:
        return peak_bandwidth("", cfg.peak_bandwidth_gbps), "override"
    if device.type == "cuda":
        return peak_bandwidth(torch.cuda.get_device_name(device)), "table"
    return CPU_NOMINAL_BANDWIDTH, "cpu-nominal"


def build_eval_model(cfg: JobConfig, spec: ModelSpec, device):
    """(model, attention choice): the transformers build in eval mode, `--weights` loaded."""
    if cfg.attn in ("flex", "varlen"):
        raise BadConfig(f"--attn {cfg.attn} is not supported by --type {cfg.type} (use auto, sdpa*, fa2/3, eager)")
    choice = attention.resolve(cfg.attn, device.type, 1, cfg.seq_len)
    if choice.hf_impl == "flex_attention":
        choice = attention.resolve("sdpa", device.type, 1, cfg.seq_len)
    model = build_model(spec, device, resolve_dtype(cfg.dtype, device), choice.hf_impl)
    if cfg.weights:
        load_weights(model, cfg.weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, choice


class _Gauges:
    """The generate series on the case's exporter (labels contract.LABELS + batch_size)."""

    def __init__(self, exporter):
        from prometheus_client import Gauge

        self.exporter = exporter
        names = [*c.LABELS, "batch_size"]
        r = exporter.registry
        self.prefill_tps = Gauge(c.M_GEN_PREFILL_TPS, "Prefill tokens/s", names, registry=r)
        self.decode_tps = Gauge(c.M_GEN_DECODE_TPS, "Decode tokens/s (counted tokens)", names, registry=r)
        self.ttft = Gauge(c.M_GEN_TTFT, "Time to first token, seconds", names, registry=r)
        self.mfu = Gauge(c.M_GEN_PREFILL_MFU, "Prefill MFU, percent", names, registry=r)
        self.bw = Gauge(c.M_GEN_DECODE_BW, "Decode memory-bandwidth utilisation, percent", names, registry=r)
        self.speedup = Gauge(c.M_GEN_CACHE_SPEEDUP, "KV cache vs no cache speed-up", list(c.LABELS), registry=r)

    def set_row(self, row: dict) -> None:
        lab = dict(self.exporter.labels, batch_size=str(row["batch_size"]))
        for gauge, key in (
            (self.prefill_tps, "prefill_tps"),
            (self.decode_tps, "decode_tps"),
            (self.ttft, "ttft_s"),
            (self.mfu, "prefill_mfu"),
            (self.bw, "decode_bandwidth_pct"),
        ):
            if row.get(key):
                gauge.labels(**lab).set(row[key]["mean"])


def run_generate(ctx: RunContext) -> dict:
    """The `generate` case on this process (rank 0 of a one-process world); returns the result dict."""
    cfg, spec, device, world, peak, peak_source, exporter = (
        ctx.cfg, ctx.spec, ctx.device, ctx.world, ctx.peak, ctx.peak_source, ctx.exporter
    )  # fmt: skip
    if world.size > 1:
        raise BadConfig("--type generate runs on one process (one GPU); use a pool of 1 GPU")
    torch.manual_seed(cfg.seed)
    model, choice = build_eval_model(cfg, spec, device)
    elem = next(model.parameters()).element_size()
    bw_peak, bw_source = resolve_bandwidth(cfg, device)
    is_cuda = device.type == "cuda"
    meter = open_meter(device.type, device.index or 0, hip=bool(getattr(torch.version, "hip", None)))

    def sync():
        if is_cuda:
            torch.cuda.synchronize(device)

    eos = eos_ids(spec)
    P, N = cfg.seq_len, cfg.new_tokens
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    prompt_row = torch.randint(FIRST_TOKEN_ID, spec.vocab, (1, P), generator=torch.Generator().manual_seed(cfg.seed))
    fpt = prefill_flops_per_token(spec, P)
    gauges = _Gauges(exporter) if exporter is not None else None
    sizes = list(cfg.gen_batch_sizes)
    total = len(sizes) + (1 if cfg.no_cache_batch else 0)
    if exporter is not None:
        exporter.set_info({"impl": "hf", "attn": choice.label, "seq_len": P, "new_tokens": N, "world_size": 1})
        exporter.steps_total.set(total)
    rows, power, energy_total, tokens_total = [], [], 0.0, 0
    done = 0
    path = decode_path(model, device)
    with torch.inference_mode(), choice.context():
        for B in sizes:
            prompt = prompt_row.expand(B, P).contiguous().to(device)
            row = {"batch_size": B, "error": None, "decode_path": path}
            dec = None
            try:
                if is_cuda:
                    torch.cuda.reset_peak_memory_stats(device)

                def run(n, B=B, prompt=prompt):
                    nonlocal dec
                    if path == "eager":
                        return decode(model, prompt, n, eos=eos, temperature=cfg.temperature, generator=gen, sync=sync)
                    if dec is None:
                        dec = make_static(model, B, P + N, path, device)
                    return decode_static(dec, prompt, n, eos=eos, temperature=cfg.temperature, sync=sync)

                for _ in range(min(cfg.warmup_steps, 1)):
                    if exporter is not None:
                        exporter.set_state("warmup")
                    run(min(N, 4))  # the static path compiles and captures its graph here
                if exporter is not None:
                    exporter.set_state("measuring")
                outs, pw = [], []
                e0 = meter.energy_j() if meter is not None else None
                for _ in range(cfg.steps):
                    outs.append(run(N))
                    if meter is not None:
                        pw.append(meter.power_w())
                if meter is not None:
                    energy_total += meter.energy_j() - e0
                    power += pw
                if path != "eager":  # the transformers loop once (after a short warm-up), for comparison
                    decode(model, prompt, min(N, 4), eos=eos, temperature=cfg.temperature, generator=gen, sync=sync)
                    e = decode(model, prompt, N, eos=eos, temperature=cfg.temperature, generator=gen, sync=sync)
                    if e.decode_steps and e.decode_s > 0:
                        row["eager_decode_tps"] = (e.counted - B) / e.decode_s
                        row["eager_ttft_s"] = e.ttft_s
            except Exception as exc:  # noqa: BLE001 - OOM at one batch size is a row, not the case
                kind = classify_error(exc)
                if kind is None or kind[0] != c.EXIT_OOM:
                    raise
                row["error"] = f"{kind[1]}: {kind[2][:200]}"
                rows.append(row)
                if is_cuda:
                    torch.cuda.empty_cache()
                print(f"generate batch {B}: {row['error']}", file=sys.stderr, flush=True)
                continue
            decode_tps = [(o.counted - B) / o.decode_s for o in outs if o.decode_s > 0 and o.decode_steps]
            step_s = [o.decode_s / o.decode_steps for o in outs if o.decode_steps]
            bw = [
                100.0 * decode_bytes(spec, elem, B, P, o.decode_steps) / o.decode_s / bw_peak
                for o in outs
                if o.decode_steps
            ]
            prefill_tps = [B * P / o.prefill_s for o in outs]
            last = outs[-1]
            tokens_total += sum(o.counted for o in outs)
            row.update(
                prefill_tps=_summary(prefill_tps),
                ttft_s=_summary([o.ttft_s for o in outs]),
                decode_tps=_summary(decode_tps),
                decode_step_s=_summary(step_s),
                prefill_mfu=_summary([100.0 * fpt * t / peak for t in prefill_tps]),
                decode_bandwidth_pct=_summary(bw),
                tokens_generated=int(last.tokens.numel()),
                tokens_counted=last.counted,
                rows_finished_by_eos=int((last.lengths < N).sum()),
                distinct_first_tokens=int(last.tokens[:, 0].unique().numel()),
                peak_memory_gib=torch.cuda.max_memory_reserved(device) / 2**30 if is_cuda else None,
            )
            rows.append(row)
            done += 1
            if exporter is not None:
                exporter.step.set(done)
                gauges.set_row(row)
                if row["decode_tps"]:
                    exporter.tps.set(row["decode_tps"]["mean"])
                exporter.mfu.set(row["prefill_mfu"]["mean"])
                if is_cuda:
                    exporter.peak_memory.set(torch.cuda.max_memory_reserved(device))
            if row.get("eager_decode_tps") and row["decode_tps"]:
                row["decode_speedup_vs_eager"] = row["decode_tps"]["mean"] / row["eager_decode_tps"]
            del dec
            print(
                f"generate batch {B}: prefill {row['prefill_tps']['mean']:.4g} tok/s, TTFT "
                f"{row['ttft_s']['mean'] * 1e3:.3g} ms, decode "
                f"{(row['decode_tps'] or {'mean': float('nan')})['mean']:.4g} tok/s ({path}"
                + (f"; eager {row['eager_decode_tps']:.4g} tok/s" if row.get("eager_decode_tps") else "")
                + ")",
                file=sys.stderr,
                flush=True,
            )
        no_cache = None
        if cfg.no_cache_batch:
            B = cfg.no_cache_batch
            prompt = prompt_row.expand(B, P).contiguous().to(device)
            with_cache = decode(model, prompt, N, eos=[], temperature=0, use_cache=True, sync=sync, keep_logits=True)
            without = decode(model, prompt, N, eos=[], temperature=0, use_cache=False, sync=sync)
            t_c = with_cache.ttft_s + with_cache.decode_s
            t_n = without.ttft_s + without.decode_s
            differ = (with_cache.tokens != without.tokens).any(dim=0).nonzero()
            cache_logits = torch.stack(with_cache.logits, dim=1)
            ref = nocache_logits(model, prompt, with_cache.tokens)
            no_cache = {
                "batch_size": B,
                "new_tokens": N,
                "cache_tps": with_cache.counted / t_c,
                "no_cache_tps": without.counted / t_n,
                "speedup": t_n / t_c,
                "tokens_match": bool(torch.equal(with_cache.tokens, without.tokens)),
                "tokens_match_fraction": float((with_cache.tokens == without.tokens).float().mean()),
                "first_divergence": int(differ[0]) if differ.numel() else None,
                "teacher_forced": logit_agreement(ref, cache_logits, with_cache.tokens),
            }
            if path != "eager":
                dec = make_static(model, B, P + N, path, device)
                st = decode_static(
                    dec, prompt, N, eos=[], temperature=0, sync=sync, keep_logits=True, force=with_cache.tokens
                )
                no_cache["static_vs_cache"] = logit_agreement(
                    cache_logits, torch.stack(st.logits, dim=1), with_cache.tokens
                )
                del dec
            if exporter is not None:
                exporter.step.set(total)
                gauges.speedup.labels(**exporter.labels).set(no_cache["speedup"])
            tf = no_cache["teacher_forced"]
            print(
                f"generate no-cache batch {B}: {no_cache['no_cache_tps']:.4g} tok/s vs {no_cache['cache_tps']:.4g} "
                f"with the cache ({no_cache['speedup']:.3g}x), tokens match: {no_cache['tokens_match']} (first "
                f"divergence {no_cache['first_divergence']}); same tokens: logits rel. err {tf['logits_rel_err']:.2g}, "
                f"top-1 agreement {tf['top1_agreement']:.4g}"
                + (
                    f"; static vs cache: rel. err {no_cache['static_vs_cache']['logits_rel_err']:.2g}, top-1 "
                    f"{no_cache['static_vs_cache']['top1_agreement']:.4g}"
                    if "static_vs_cache" in no_cache
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
    ok = [r for r in rows if not r["error"]]
    if not ok:
        raise torch.OutOfMemoryError(f"every batch size ran out of memory: {rows[0]['error']}")
    head = ok[-1]
    result = base_result(cfg, spec, world.size)
    env = environment(device)
    if meter is not None:
        env["driver"] = meter.driver()
    peaks = [r["peak_memory_gib"] for r in ok if r.get("peak_memory_gib") is not None]
    result.update(
        impl="hf",
        attn_backend=choice.label,
        ac="none",
        flops_per_token=fpt,
        peak_flops=peak,
        peak_flops_source=peak_source,
        peak_bandwidth=bw_peak,
        peak_bandwidth_source=bw_source,
        n_active=spec.n_active(),
        tokens_per_step=head["batch_size"] * N,
        metrics={"tps": head["decode_tps"], "mfu": head["prefill_mfu"], "step_time": head["decode_step_s"]},
        peak_memory_gib=max(peaks) if peaks else None,
        power_w=_summary(power),
        energy_j=energy_total if meter is not None else None,
        tokens_per_joule=(tokens_total / energy_total) if energy_total else None,
        generate={
            "prompt_len": P,
            "new_tokens": N,
            "temperature": cfg.temperature,
            "eos_token_ids": eos,
            "headline_batch_size": head["batch_size"],
            "decode_path": path,
            "batches": rows,
            "no_cache": no_cache,
        },
        environment=env,
    )
    return result


def table(result: dict) -> str:
    g = result["generate"]
    lines = [
        f"generate {result['config']['model']}: prompt {g['prompt_len']}, {g['new_tokens']} new tokens, "
        f"T={g['temperature']}",
        f"{'batch':>6} {'prefill tok/s':>14} {'TTFT ms':>9} {'decode tok/s':>13} {'MFU %':>7} {'BW %':>7}",
    ]
    for r in g["batches"]:
        if r["error"]:
            lines.append(f"{r['batch_size']:>6} {r['error']}")
            continue

        def m(key, scale=1.0, row=r):
            s = row.get(key)
            return float("nan") if not s else s["mean"] * scale

        lines.append(
            f"{r['batch_size']:>6} {m('prefill_tps'):>14.4g} {m('ttft_s', 1e3):>9.4g} {m('decode_tps'):>13.4g} "
            f"{m('prefill_mfu'):>7.3g} {m('decode_bandwidth_pct'):>7.3g}"
        )
    nc = g.get("no_cache")
    if nc:
        lines.append(
            f"KV cache speed-up at batch {nc['batch_size']}: {nc['speedup']:.3g}x "
            f"({nc['cache_tps']:.4g} vs {nc['no_cache_tps']:.4g} tok/s), greedy tokens match: {nc['tokens_match']}"
        )
        tf = nc.get("teacher_forced")
        if tf:
            lines.append(
                f"  on the same tokens: logits rel. err {tf['logits_rel_err']:.2g}, top-1 agreement "
                f"{tf['top1_agreement']:.4g}"
            )
    return "\n".join(lines)
