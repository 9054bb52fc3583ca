"""Every bench type x AC mode runs in-process on tiny configs, and the result obeys the contract."""

from __future__ import annotations

import math

import pytest

from trainbench.trainer import contract as c
from trainbench.trainer.bench import run_bench
from trainbench.trainer.config import JobConfig
from trainbench.trainer.specs import resolve_model


def tiny(**kw) -> JobConfig:
    base = dict(model="tiny-qwen3", seq_len=128, steps=2, warmup_steps=1, metrics_port=-1, device="cpu", loss_chunk=48)
    base.update(kw)
    return JobConfig(**base)


def check_result(res: dict, cfg: JobConfig) -> None:
    assert res["status"] == "ok" and res["error"] is None
    assert res["schema"] == c.RESULT_SCHEMA
    assert res["world_size"] == 1
    assert res["tokens_per_step"] == cfg.batch_size * cfg.seq_len
    assert res["peak_flops_source"] == "cpu-nominal"
    steps = res["steps"]
    assert len(steps) == cfg.steps + cfg.warmup_steps
    assert [s["warmup"] for s in steps] == [True] * cfg.warmup_steps + [False] * cfg.steps
    for s in steps:  # MFU exactly as DESIGN.md, per step
        want = 100 * res["flops_per_token"] * s["tps"] / (res["peak_flops"] * res["world_size"])
        assert s["mfu"] == pytest.approx(want, rel=1e-12)
        assert s["tps"] == pytest.approx(res["tokens_per_step"] / s["step_time"], rel=1e-12)
        assert math.isfinite(s["loss"])
    measured = [s for s in steps if not s["warmup"]]
    for key in c.SUMMARY_METRICS:
        summ = res["metrics"][key]
        assert set(summ) == set(c.SUMMARY_KEYS)
        assert summ["n"] == cfg.steps
        assert summ["mean"] == pytest.approx(sum(s[key] for s in measured) / cfg.steps)
        assert summ["min"] == min(s[key] for s in measured) and summ["max"] == max(s[key] for s in measured)
    assert res["losses"] == [s["loss"] for s in steps]
    assert res["peak_memory_gib"] is None and res["power_w"] is None and res["energy_j"] is None


@pytest.mark.parametrize("ac", ["none", "recompute", "selective", "offload", "auto"])
@pytest.mark.parametrize("type_", ["sft-full", "rl-full", "rl-lora"])
def test_type_by_ac(type_, ac):
    cfg = tiny(type=type_, ac=ac)
    res = run_bench(cfg)
    check_result(res, cfg)
    assert res["ac"] == ("none" if ac == "auto" else ac)  # auto on CPU: nothing to save
    assert res["attn_backend"] == "sdpa" and res["impl"] == "hf"
    spec = resolve_model("tiny-qwen3")
    if type_ == "rl-lora":
        assert res["n_adapter"] == spec.lora_params(16) == res["n_trainable"]
        assert res["flops_per_token"] == spec.flops_per_token(128, 16)
        assert res["kept_fraction"]["mean"] > 0.9
    else:
        assert res["flops_per_token"] == spec.flops_per_token(128)
        assert res["n_adapter"] == 0


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-qwen3-moe"])
def test_other_architectures(model):
    cfg = tiny(model=model, type="rl-lora", ac="recompute", batch_size=2, micro_batch=1)
    res = run_bench(cfg)
    check_result(res, cfg)
    spec = resolve_model(model)
    # MoE: attention only (routed experts are fused weights, not adapted); dense: attention + MLP
    assert res["n_adapter"] == spec.lora_params(16)


def test_recompute_gives_the_same_loss_and_gradients_as_none():
    a = run_bench(tiny(type="sft-full", ac="none", steps=3, lr=1e-3))
    b = run_bench(tiny(type="sft-full", ac="recompute", steps=3, lr=1e-3))
    s = run_bench(tiny(type="sft-full", ac="selective", steps=3, lr=1e-3))
    assert a["losses"] == pytest.approx(b["losses"], rel=1e-5)
    assert a["losses"] == pytest.approx(s["losses"], rel=1e-5)


def test_sft_loss_falls_on_a_fixed_batch():
    res = run_bench(tiny(type="sft-full", ac="none", steps=20, warmup_steps=0, fixed_batch=True, lr=3e-3))
    losses = res["losses"]
    assert len(losses) == 20
    assert losses[-1] < 0.8 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5])


def test_gradient_accumulation_counts_all_micro_batches():
    cfg = tiny(type="rl-full", batch_size=4, micro_batch=2, steps=1)
    res = run_bench(cfg)
    check_result(res, cfg)
    assert res["tokens_per_step"] == 4 * 128


def test_dry_run_allocates_nothing_and_reports_flops():
    cfg = JobConfig(model="Qwen/Qwen3-30B-A3B", type="rl-lora", seq_len=16384, dry_run=True, device="cpu")
    res = run_bench(cfg)
    spec = resolve_model("qwen3-30b-a3b")
    assert res["status"] == "dry-run"
    assert res["n_active"] == spec.n_active()
    assert res["flops_per_token"] == spec.flops_per_token(16384, 16)
    assert 29e9 < res["n_params"] < 32e9
    assert res["peak_flops"] == 1e12 and res["peak_flops_source"] == "cpu-nominal"


def test_peak_override_wins():
    res = run_bench(tiny(peak_tflops=2.5))
    assert res["peak_flops"] == 2.5e12 and res["peak_flops_source"] == "override"


def test_compiled_blocks_run_and_match_eager_loss():
    eager = run_bench(tiny(type="sft-full", ac="none", steps=1))
    compiled = run_bench(tiny(type="sft-full", ac="none", steps=1, compile=True))
    assert compiled["config"]["compile"] is True
    assert compiled["losses"] == pytest.approx(eager["losses"], rel=1e-4)


def test_sdpa_math_backend_runs_and_is_recorded():
    res = run_bench(tiny(attn="sdpa-math", ac="recompute"))
    assert res["attn_backend"] == "sdpa-math"


def test_auto_ac_estimate_matches_the_gpu_calibration():
    """H200 measurements (docs/performance.md): 0.6B rl-full 16k fits without AC (55 GiB reserved); 4B rl-lora 16k
    without AC ran out of 140 GiB, so auto must pick recompute there."""
    from trainbench.trainer.memory import HF_AC_ORDER as AUTO_ORDER
    from trainbench.trainer.memory import MEMORY_FRACTION
    from trainbench.trainer.memory import hf_estimate_bytes as estimate_bytes

    small, big = resolve_model("qwen3-0.6b"), resolve_model("qwen3-4b")
    gib = 2**30
    assert 45 * gib < estimate_bytes(small, "none", 16384, small.n_total(), 4096) < 65 * gib
    lora = big.lora_params(16)
    assert estimate_bytes(big, "none", 16384, lora, 4096) > MEMORY_FRACTION * 140 * gib
    assert estimate_bytes(big, "recompute", 16384, lora, 4096) < 40 * gib
    assert AUTO_ORDER[0] == "none"
