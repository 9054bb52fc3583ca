"""Each verdict rule: direction, per-metric thresholds, the 1% display rule, noise, missing baselines."""

from __future__ import annotations

import pytest

from trainbench.operator.api import Thresholds
from trainbench.operator.results import baseline as B
from trainbench.operator.results import verdict as V


def test_directions():
    assert V.judge("tps", 90, 100).status == "regression"  # -10%, higher is better
    assert V.judge("mfu", 90, 100).status == "regression"
    assert V.judge("tokens_per_joule", 90, 100).status == "regression"
    assert V.judge("step_time", 110, 100).status == "regression"  # +10%, lower is better
    assert V.judge("peak_memory", 110, 100).status == "regression"
    assert V.judge("tps", 110, 100).status == "improvement"
    assert V.judge("step_time", 90, 100).status == "improvement"
    assert V.judge("peak_memory", 90, 100).status == "improvement"


def test_threshold_is_strict_and_per_metric():
    assert V.judge("tps", 95, 100).status == "changed"  # exactly 5% worse: not more than the threshold
    assert V.judge("tps", 94.9, 100).status == "regression"
    v = V.judge("tps", 92, 100, threshold=10)
    assert v.status == "changed" and v.change_pct == pytest.approx(-8.0)
    th = V.thresholds_for(Thresholds(default=5, step_time=20))
    assert th["step_time"] == 20 and th["mfu"] == 5
    assert V.thresholds_for({"default": 3, "tps": 8}) == {
        "mfu": 3,
        "tps": 8,
        "step_time": 3,
        "peak_memory": 3,
        "tokens_per_joule": 3,
    }
    verdicts = V.evaluate(
        {"tps": {"mean": 92.0}, "step_time": {"mean": 1.08}},
        {"tps": {"mean": 100.0}, "step_time": {"mean": 1.0}},
        {"default": 5, "tps": 10},
    )
    assert verdicts["tps"].status == "changed" and verdicts["step_time"].status == "regression"


def test_changes_under_one_percent_are_not_shown_others_are():
    v = V.judge("tps", 99.5, 100)
    assert v.status == "same" and not v.shown
    assert V.judge("tps", 101.5, 100).status == "changed"
    assert V.judge("tps", 98.5, 100).shown


def test_noise_a_change_within_the_step_to_step_spread_of_both_runs():
    # -8% but each run's steps spread by 6 tokens/s around their mean: sqrt(6^2 + 6^2) = 8.5 > 8
    v = V.judge("tps", 92, 100, current_std=6, baseline_std=6)
    assert v.status == "noise" and v.spread == pytest.approx(8.485, rel=1e-3) and v.shown
    # the same -8% with tight runs is a regression
    assert V.judge("tps", 92, 100, current_std=1, baseline_std=1).status == "regression"
    # the spread of only one run is not enough to call it noise
    assert V.judge("tps", 92, 100, current_std=50, baseline_std=None).status == "regression"
    # noise applies to improvements too
    assert V.judge("mfu", 108, 100, current_std=6, baseline_std=6).status == "noise"


def test_missing_values():
    assert V.judge("tps", 100, None).status == "new"
    assert V.judge("tps", 100, 0).status == "new"
    assert V.judge("tps", None, 100).status == "missing"
    # metrics absent on both sides are left out; present on one side only are new/missing
    v = V.evaluate({"tps": {"mean": 1.0}, "peak_memory_gib": None}, {"peak_memory_gib": 2.0})
    assert set(v) == {"tps", "peak_memory"}
    assert v["tps"].status == "new" and v["peak_memory"].status == "missing"


def test_tokens_per_joule_spread_from_tps_and_power():
    m = {"tokens_per_joule": 20.0, "tps": {"mean": 100.0, "std": 3.0}, "power_w": {"mean": 5.0, "std": 0.2}}
    value, std = V.metric_value(m, "tokens_per_joule")
    assert value == 20.0 and std == pytest.approx(20.0 * (0.03**2 + 0.04**2) ** 0.5)


def test_apply_attaches_verdicts_and_counts_regressions(current, baseline_results):
    out = V.apply(current, B.from_results(baseline_results))
    by_type = {(c["model"], c["type"], c["pool"]): c for c in out["cases"]}
    sft_h100 = by_type[("qwen3-0.6b", "sft-full", "h100")]["verdicts"]
    assert sft_h100["tps"]["status"] == "regression" and sft_h100["tps"]["change_pct"] == pytest.approx(-8.0)
    assert sft_h100["step_time"]["status"] == "regression"
    assert by_type[("qwen3-0.6b", "rl-lora", "h100")]["verdicts"]["peak_memory"]["status"] == "regression"
    assert by_type[("qwen3-4b", "rl-lora", "h100")]["verdicts"]["tps"]["status"] == "improvement"
    assert by_type[("qwen3-0.6b", "sft-full", "a6000")]["verdicts"]["tps"]["status"] == "changed"
    assert by_type[("qwen3-0.6b", "rl-lora", "a6000")]["verdicts"] is None  # failed: nothing to judge
    assert out["summary"]["regressions"] == 2
    assert out["baseline"]["matched"] == 4 and out["baseline"]["source"] == "results"
    assert [c["id"] for c, _ in V.regressions(out)].count(by_type[("qwen3-0.6b", "sft-full", "h100")]["id"]) == 4


def test_apply_without_baseline_leaves_no_verdicts(current):
    out = V.apply(current, None)
    assert out["baseline"] is None and out["summary"]["regressions"] == 0
    assert all(c["verdicts"] is None for c in out["cases"])
