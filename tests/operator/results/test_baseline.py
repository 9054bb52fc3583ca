"""Baselines: prime-rl benchmark JSON import, case matching, last successful run from history, sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainbench.operator.api import parse_spec
from trainbench.operator.plan import plan
from trainbench.operator.report.markdown import render_report
from trainbench.operator.results import baseline as B
from trainbench.operator.results import history as H
from trainbench.operator.results import verdict as V
from trainbench.operator.results.document import build_results

PRIME = Path(__file__).resolve().parents[1] / "data" / "prime-rl"

H100_SPEC = {
    "suite": "h100",
    "pools": [{"name": "h100", "hardware": "H100 HBM3"}],
    "matrix": {
        "models": ["qwen3-0.6b"],
        "types": ["rl-lora"],
        "seqLens": [16384],
        "attn": ["auto"],
        "include": [
            {"model": "Qwen/Qwen3-4B", "type": "rl-lora", "seqLen": 16384, "attn": "fa3"},
            {"model": "qwen3-0.6b", "type": "sft-full", "seqLen": 8192, "attn": "fa3"},
            {"model": "qwen3-0.6b", "type": "sft-full", "seqLen": 8192, "attn": "fa2"},
        ],
    },
}


def h100_results(fx, tps_factor: float = 1.0) -> dict:
    spec = parse_spec(H100_SPEC)
    cases = plan(spec)
    numbers = {
        ("qwen3-0.6b", "rl-lora", 16384): (13340.0, 10.9, 5.1),
        ("qwen3-4b", "rl-lora", 16384): (6230.0, 21.7, 23.3),
        ("qwen3-0.6b", "sft-full", 8192): (26010.0, 16.8, 31.7),
    }
    outcomes = {}
    for c in cases:
        tps, mfu, gib = numbers[(c.model, c.type, c.seq_len)]
        r = fx.trainer_result(tps * tps_factor, mfu * tps_factor, c.seq_len, peak_gib=gib)
        r["attn_backend"] = "fa3" if c.attn == "auto" else c.attn
        outcomes[c.id] = {"phase": "Succeeded", "result": r}
    return build_results("h100-run", "h100", spec, cases, outcomes, 0, 60, {"executor": "kubernetes"})


def test_prime_rl_json_import():
    docs = [json.loads(p.read_text()) for p in sorted(PRIME.glob("*.json"))]
    case = B.prime_rl_case(docs[1])
    assert case["model"] == "qwen3-0.6b" and case["type"] == "rl-lora" and case["lora_rank"] == 16
    assert case["hardware"] == "1xH100 HBM3" and case["attn"] == "fa3" and case["ac"] == "recompute"
    assert case["metrics"]["tps"]["mean"] == 13340.0 and case["metrics"]["peak_memory_gib"] == 5.1
    assert B.prime_rl_case(docs[3])["model"] == "qwen3-4b"  # Qwen3-4B-Instruct-2507 -> the shipped qwen3-4b
    assert B.prime_rl_case(docs[2])["type"] == "sft-full"
    base = B.load_baseline(PRIME)
    assert base.source == "prime-rl" and len(base) == 3  # the failed file is not a baseline
    assert "3 prime-rl benchmark file(s)" in base.description


def test_prime_rl_baseline_matches_and_judges_without_step_time(fx):
    results = h100_results(fx, tps_factor=0.9)
    V.apply(results, B.load_baseline(PRIME))
    by = {(c["model"], c["type"], c["attn"]): c for c in results["cases"]}
    auto = by[("qwen3-0.6b", "rl-lora", "auto")]  # asked for auto, ran fa3: matches prime-rl's FA3 entry
    assert auto["baseline"]["source"] == "prime-rl"
    assert auto["verdicts"]["tps"]["status"] == "regression"
    assert auto["verdicts"]["tps"]["change_pct"] == pytest.approx(-10.0)
    assert "step_time" not in auto["verdicts"]  # prime-rl's step is not trainbench's step
    assert auto["verdicts"]["peak_memory"]["status"] == "same"
    assert by[("qwen3-4b", "rl-lora", "fa3")]["verdicts"]["mfu"]["status"] == "regression"
    assert by[("qwen3-0.6b", "sft-full", "fa2")]["verdicts"] is None  # prime-rl has FA3 only for this case
    assert results["baseline"]["matched"] == 3


def test_single_prime_rl_file_and_list():
    one = sorted(PRIME.glob("*Qwen3-4B-Instruct*.json"))[0]
    assert len(B.load_baseline(one)) == 1
    assert len(B.load_baseline([json.loads(p.read_text()) for p in PRIME.glob("*.json")])) == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "qwen3-4b"),
        ("hardware", "2xH100 HBM3"),
        ("type", "rl-full"),
        ("lora_rank", 32),
        ("seq_len", 8192),
        ("ac", "offload"),
        ("attn", "fa2"),
        ("ep", 2),
        ("cp", 2),
    ],
)
def test_cases_match_on_every_key_field(field, value):
    case = {
        "model": "qwen3-0.6b",
        "hardware": "1xH100 HBM3",
        "type": "rl-lora",
        "lora_rank": 16,
        "seq_len": 16384,
        "ac": "recompute",
        "attn": "fa3",
        "ep": 1,
        "cp": 1,
    }
    base = B.Baseline("results", "test")
    base.add(case, {"metrics": {}})
    assert base.find(dict(case)) is not None
    assert base.find({**case, "hardware": "1x NVIDIA H100 80GB HBM3", "model": "Qwen/Qwen3-0.6B"}) is not None
    assert base.find({**case, field: value}) is None


def test_history_baseline_is_the_last_successful_run_per_case(fx):
    first = fx.make_results("n1", fx.CURRENT, when=0)
    second = fx.make_results("n2", fx.scaled({("qwen3-0.6b", "sft-full", "h100"): 1.2}), when=86400)
    failed = {("qwen3-0.6b", "sft-full", "h100"): ("Timeout", "ran past timeoutSeconds")}
    third = fx.make_results("n3", fx.CURRENT, failures=failed, when=2 * 86400)
    doc = None
    for r in (first, second, third):
        doc = H.append(doc, r)
    base = B.from_history(doc, exclude_run="n4")
    sft = next(c for c in third["cases"] if (c["model"], c["type"], c["pool"]) == ("qwen3-0.6b", "sft-full", "h100"))
    entry = base.find({**sft, "phase": "Succeeded"})
    assert entry["run"] == "n2"  # n3 failed for this case: n2 is its last successful run
    assert entry["metrics"]["tps"]["mean"] == pytest.approx(26010.0 * 1.2)
    other = next(c for c in third["cases"] if (c["model"], c["type"]) == ("qwen3-4b", "rl-lora"))
    assert base.find(other)["run"] == "n3"
    # the run being judged is never its own baseline
    assert B.from_history(doc, exclude_run="n3").find(other)["run"] == "n2"


def test_results_file_and_folder_baselines(tmp_path, baseline_results, current):
    (tmp_path / "results.json").write_text(json.dumps(baseline_results))
    for src in (tmp_path, tmp_path / "results.json", baseline_results):
        b = B.load_baseline(src)
        assert b.source == "results" and len(b) == 4
    text = render_report(current, baseline=B.load_baseline(tmp_path))
    assert "(4 of 5 cases matched)" in text


def test_bad_baseline_sources(tmp_path):
    with pytest.raises(B.BaselineError, match="no such file"):
        B.load_baseline(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(B.BaselineError, match="not JSON"):
        B.load_baseline(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"hello": 1}')
    with pytest.raises(B.BaselineError, match="not a baseline"):
        B.load_baseline(tmp_path / "y.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(B.BaselineError, match="no results.json and no prime-rl"):
        B.load_baseline(tmp_path / "empty")
