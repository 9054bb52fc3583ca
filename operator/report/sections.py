"""Report sections of the non-training benchmark types, of the pools' calibration and of --micro-batch auto
(markdown.py calls these).

Each reads the trainer's own result kept in a results-document case (`case["trainer"]`): `generate` (per batch size
rows), `verify` (per RAFT cycle scores) and `autobatch` (the size found). Summaries may be full
({mean, std, ...}) or slimmed to {mean} (a 4 KiB termination message): only `mean` is read.
"""

from __future__ import annotations

NON_TRAINING = ("generate", "verify", "calibrate")  # not in the model tables (calibrate: spec.calibrate's cases)


def _table_start(title: str, head: list[str]) -> list[str]:
    """A section's heading and its table's header rows."""
    return [title, "", "| " + " | ".join(head) + " |", "|" + "|".join("-" * (len(h) + 2) for h in head) + "|"]


def _mean(x) -> float | None:
    if isinstance(x, dict):
        return x.get("mean")
    return x if isinstance(x, (int, float)) else None


def _num(v: float | None, fmt: str = "{:.4g}", suffix: str = "") -> str:
    return "–" if v is None else fmt.format(v) + suffix


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _title(case: dict) -> str:
    return case.get("hf_name") or case.get("model") or "?"


def generate_section(cases: list[dict], cell=None) -> list[str]:
    """`cell(metric, value, verdict)` (report.cell) marks the headline batch size's decode tok/s and prefill MFU
    with their verdicts against the baseline."""
    rows = [
        c for c in cases if c.get("type") == "generate" and isinstance((c.get("trainer") or {}).get("generate"), dict)
    ]
    if not rows:
        return []
    head = ["Model", "Hardware", "Prompt", "New", "Batch", "Prefill tok/s", "TTFT", "Decode tok/s", "Prefill MFU"]
    head += ["Decode BW", "Distinct 1st"]
    lines = _table_start("## Generation", head)
    notes = []
    for c in rows:
        t = c["trainer"]
        g = t["generate"]
        nominal = "†" if t.get("peak_flops_source") == "cpu-nominal" else ""
        for b in g.get("batches") or []:
            lead = [_title(c), c.get("hardware") or "?", str(g.get("prompt_len")), str(g.get("new_tokens"))]
            if b.get("error"):
                lines.append(
                    "| " + " | ".join([*lead, str(b["batch_size"]), f"**{b['error'][:60]}**"] + [""] * 5) + " |"
                )
                continue
            ttft = _mean(b.get("ttft_s"))
            decode = _num(_mean(b.get("decode_tps")))
            mfu = _num(_mean(b.get("prefill_mfu")), "{:.2f}", "%")
            vd = c.get("verdicts") or {}
            if cell is not None and b["batch_size"] == g.get("headline_batch_size") and vd:
                decode = cell("tps", _mean(b.get("decode_tps")), vd.get("tps"))
                mfu = cell("mfu", _mean(b.get("prefill_mfu")), vd.get("mfu"))
            lines.append(
                "| "
                + " | ".join(
                    [
                        *lead,
                        str(b["batch_size"]),
                        _num(_mean(b.get("prefill_tps"))),
                        _num(None if ttft is None else ttft * 1e3, "{:.3g}", " ms"),
                        decode,
                        mfu + nominal,
                        _num(_mean(b.get("decode_bandwidth_pct")), "{:.2f}", "%") + nominal,
                        f"{b.get('distinct_first_tokens', '–')}/{b['batch_size']}",
                    ]
                )
                + " |"
            )
        nc = g.get("no_cache")
        if nc:
            same = "identical" if nc.get("tokens_match") else f"{100 * nc.get('tokens_match_fraction', 0):.0f}% equal"
            notes.append(
                f"- {_title(c)} on {c.get('hardware')}: KV cache **{nc['speedup']:.2f}x** faster than no cache at batch "
                f"{nc['batch_size']} ({nc['cache_tps']:.4g} vs {nc['no_cache_tps']:.4g} tok/s over {nc['new_tokens']} "
                f"tokens); greedy tokens {same}"
            )
    lines.append("")
    lines += notes + ([""] if notes else [])
    lines += [
        "> Decode tok/s counts each sequence's tokens up to its EOS; Prefill MFU uses 2·N_active (LM head once per row) + "
        "attention forward FLOPs per prompt token; Decode BW is (weights + KV cache bytes read per step) / step time / peak memory "
        "bandwidth; Distinct 1st: distinct first tokens sampled over the batch (one prompt repeated: >1 shows "
        "independent sampling). † against nominal CPU peaks.",
        "",
    ]
    return lines


def verify_section(cases: list[dict]) -> list[str]:
    rows = [c for c in cases if c.get("type") == "verify" and isinstance((c.get("trainer") or {}).get("verify"), dict)]
    if not rows:
        return []
    ks = sorted(
        {k for c in rows for cy in c["trainer"]["verify"].get("cycles") or [] for k in cy["score"]["pass_at_k"]},
        key=int,
    )
    head = ["Model", "Hardware", "Prompts × n", "Cycle", "Kept", "Compile", "Pass"] + [f"pass@{k}" for k in ks]
    lines = _table_start("## Code Verification", head)
    notes = []
    for c in rows:
        v = c["trainer"]["verify"]
        for cy in v.get("cycles") or []:
            s = cy["score"]
            lines.append(
                "| "
                + " | ".join(
                    [
                        _title(c),
                        c.get("hardware") or "?",
                        f"{v.get('prompts')} × {v.get('samples_per_prompt')}",
                        "baseline" if cy["cycle"] == 0 else f"RAFT {cy['cycle']}",
                        "–" if cy.get("kept") is None else str(cy["kept"]),
                        _pct(s.get("compile_rate")),
                        _pct(s.get("pass_rate")),
                    ]
                    + [_pct(s["pass_at_k"].get(k)) for k in ks]
                )
                + " |"
            )
        last = (v.get("cycles") or [{}])[-1].get("score") or {}
        out = {k: n for k, n in (last.get("outcomes") or {}).items() if n}
        if out:
            notes.append(
                f"- {_title(c)} ({v.get('tokenizer')}, {v.get('compiler')}): "
                + ", ".join(f"{k} {n}" for k, n in out.items())
            )
    lines.append("")
    lines += notes + ([""] if notes else [])
    lines += [
        "> pass@k is the unbiased estimator 1 − C(n−c,k)/C(n,k) per prompt (n samples, c passed), averaged over the "
        "prompts; Compile and Pass are shares of all samples. Random weights compile ~0%: that proves the pipeline.",
        "",
    ]
    return lines


def autobatch_section(cases: list[dict]) -> list[str]:
    rows = [c for c in cases if isinstance((c.get("trainer") or {}).get("autobatch"), dict)]
    if not rows:
        return []
    head = ["Model", "Type", "SeqLen", "Hardware", "Micro-batch", "Discovery", "Cached", "Capacity"]
    lines = _table_start("## Auto Micro-Batch", head)
    for c in rows:
        a = c["trainer"]["autobatch"]
        lines.append(
            "| "
            + " | ".join(
                [
                    _title(c),
                    str(c.get("type")),
                    str(c.get("seq_len")),
                    c.get("hardware") or "?",
                    str(a.get("micro_batch")),
                    _num(a.get("discovery_s"), "{:.1f}", " s"),
                    "yes" if a.get("cached") else "no",
                    _num(a.get("capacity_gib"), "{:.3g}", " GiB") + f" ({a.get('method', '?')})",
                ]
            )
            + " |"
        )
    lines.append("")
    return lines


def _of_peak(tflops: float | None, peak: float | None) -> str:
    return "–" if not tflops or not peak else f"{100 * tflops * 1e12 / peak:.1f}%"


def calibration_section(cases: list[dict], threshold: float = 5.0) -> list[str]:
    """The pools' measured ceilings (spec.calibrate), each against its baseline: a pool whose calibration fell by
    more than `threshold` percent (a throttled or power-capped GPU) is marked, though it is never a regression."""
    rows = [c for c in cases if c.get("type") == "calibrate"]
    if not rows:
        return []
    head = ["Pool", "Hardware", "GEMM TFLOP/s", "of peak", "Attention TFLOP/s", "of peak", "vs baseline"]
    lines = _table_start("## Calibration", head)
    for c in rows:
        m, peak = c.get("metrics") or {}, c.get("peak_flops")
        cal = (c.get("trainer") or {}).get("calibration") or {}
        if c.get("phase") != "Succeeded" or not m.get("gemm_tflops"):
            reason = c.get("reason") or c.get("phase")
            lines.append(f"| {c.get('pool')} | {c.get('hardware') or '?'} | **{reason}** | | | | |")
            continue

        gemm, attn = m.get("gemm_tflops"), m.get("attention_tflops")
        backend = f" ({cal['attention_backend']})" if cal.get("attention_backend") else ""
        changes = []
        base = (c.get("baseline") or {}).get("metrics") or {}
        for key, label in (("gemm_tflops", "GEMM"), ("attention_tflops", "attention")):
            now, was = m.get(key), base.get(key)
            if now and was:
                pct = 100 * (now - was) / was
                changes.append(f"{label} {pct:+.1f}%" + (" :warning:" if pct < -threshold else ""))
        lines.append(
            "| "
            + " | ".join(
                [
                    str(c.get("pool")),
                    c.get("hardware") or "?",
                    _num(gemm, "{:.4g}"),
                    _of_peak(gemm, peak),
                    _num(attn, "{:.4g}") + backend,
                    _of_peak(attn, peak),
                    ", ".join(changes) or "–",
                ]
            )
            + " |"
        )
    lines += [
        "",
        "> One GPU of each pool: the best GEMM in the trainer's dtype (bf16 on a GPU; square and model-shaped matmuls) and the best SDPA backend's "
        "causal attention, forward + backward, head_dim 128 (FLOPs 3 × 2·2·b·h·s²·d/2). They are the ceilings of "
        "% of floor. A calibration is never a regression; :warning: marks a pool that measures lower than its "
        "baseline, which slows every case on it (clocks, power limit, heat).",
        "",
    ]
    return lines
