"""Golden reports: fixed results + baselines render to reviewed markdown (tests/report/golden/*.md).

Regenerate after an intended format change with `UPDATE_GOLDEN=1 pytest tests/report/test_golden.py` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainbench.operator.report.markdown import render_report
from trainbench.operator.results import baseline as B

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{name} differs from the reviewed golden file (UPDATE_GOLDEN=1 to accept)"


def test_report_with_baseline_matches_golden(current, baseline_results):
    text = render_report(current, baseline=B.from_results(baseline_results))
    check_golden("nightly-vs-baseline.md", text)


def test_report_without_baseline_matches_golden(current):
    check_golden("nightly-no-baseline.md", render_report(current))


def test_report_with_history_matches_golden(current, history_doc):
    base = B.from_history(history_doc, exclude_run=current["run"])
    plots = {"qwen3-0.6b": "plots/trend-qwen3-0.6b.png", "qwen3-4b": "plots/trend-qwen3-4b.png"}
    text = render_report(current, baseline=base, history=history_doc, plots=plots, history_runs=5)
    check_golden("nightly-history.md", text)


@pytest.mark.parametrize("name", ["nightly-vs-baseline.md", "nightly-no-baseline.md", "nightly-history.md"])
def test_golden_files_are_reviewed_markdown(name):
    text = (GOLDEN / name).read_text()
    assert text.startswith("# Performance Benchmarks: nightly\n\n")
    assert "| Type | SeqLen | AC | Attn | EP | CP | Hardware | MFU | TPS | Step Time | Peak Mem |" in text


def test_noisy_runs_report_noise_not_regressions(fx):
    # both runs' steps spread by 5% around their means, one process each: a 2% change and an 8% drop are both
    # within twice a single step's spread, the guard band below which two fresh processes of identical code
    # cannot be told apart: noise, not a regression
    now = fx.make_results("noisy-now", fx.CURRENT, rel_std=0.05, when=86400)
    before_values = fx.scaled({("qwen3-0.6b", "sft-full", "h100"): 1 / 0.92, ("qwen3-0.6b", "sft-full", "a6000"): 1.02})
    before = fx.make_results("noisy-before", before_values, rel_std=0.05)
    text = render_report(now, baseline=B.from_results(before))
    check_golden("nightly-noise.md", text)
    assert "6.60k (-2.0% ~noise)" in text
    assert "26.01k (-8.0% ~noise)" in text and ":warning: (" not in text


def test_first_step_column_shows_the_cold_start(fx, current):
    from trainbench.operator.results.document import first_step_seconds

    by_model = {(c["model"], c["type"], c["pool"]): c for c in current["cases"]}
    assert by_model[("qwen3-4b", "rl-lora", "h100")]["metrics"]["first_step_s"] == 204.0
    assert "First Step (compile)" in render_report(current) and "| 204.00s |" in render_report(current)
    # a result without its per-step list (a termination message cut to 4 KiB, generate/verify): no value, and a
    # report where no case has one shows neither the column nor its note
    assert first_step_seconds({"steps": []}) is None and first_step_seconds({}) is None
    assert first_step_seconds({"steps": [{"step": 1, "step_time": True}]}) is None
    for case in current["cases"]:
        if case.get("metrics"):
            case["metrics"]["first_step_s"] = None
    text = render_report(current)
    assert "First Step" not in text
    assert "| Type | SeqLen | AC | Attn | EP | CP | Hardware | MFU | TPS | Step Time | Peak Mem | Power |" in text
