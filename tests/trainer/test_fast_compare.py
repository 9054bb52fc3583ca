"""benchmarks/compare_hf.py end to end on the CPU with a tiny config (numbers mean nothing here; the GPU run is
in docs/performance.md): the reference loop and bench mode both run, and the table and JSON come out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_hf.py"


def load():
    spec = importlib.util.spec_from_file_location("compare_hf", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_compare_runs_reference_and_bench_on_cpu(tmp_path, capsys):
    mod = load()
    out = tmp_path / "cmp.json"
    rc = mod.main(
        [
            "--device", "cpu", "--rows", "tiny-qwen3:rl-lora:128", "--variants", "plain,bench",
            "--no-check", "--no-compile", "--steps", "2", "--warmup", "1", "--bench-docs", "4,1",
            "--json", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    row = report["rows"][0]
    for key in ("plain", "bench", "bench-docs1"):
        assert row[key]["status"] == "ok", row[key]
        assert row[key]["tps"] > 0 and len(row[key]["step_times"]) == 2
    assert row["bench"]["impl"] == "fast" and row["bench"]["ac"] == "none"
    text = capsys.readouterr().out
    assert "| tiny-qwen3 rl-lora 128 |" in text and "bench-docs1" in text


def test_table_verdict_uses_the_bar():
    mod = load()
    ok = {"status": "ok", "tps": 100.0, "mfu": 60.0, "peak_gib": 1.0, "attn": "flex", "ac": "none"}
    row = {"model": "qwen3-0.6b", "type": "rl-full", "seq": 16384, "plain": {**ok, "tps": 50.0}}
    row["liger"] = {**ok, "tps": 80.0}
    row["bench"] = ok
    assert "| 1.25x | 45% / 1.3x | NO |" in mod.table([row])  # 100 / 80 < 1.3
    row["liger"]["tps"] = 70.0
    assert "| 1.43x | 45% / 1.3x | yes |" in mod.table([row])
    row["bench"] = {**ok, "mfu": 40.0}
    assert "| NO |" in mod.table([row])  # ratio holds, MFU does not


def test_bf16_check_passes_on_cpu():
    """The benchmark's bf16 equivalence check (fast vs transformers, both against transformers in fp32)."""
    mod = load()
    mod.DEVICE = "cpu"
    out = mod.gpu_check("sdpa", False, layers=2, seq=256, model="tiny-qwen3")
    assert out["pass"], out
    assert out["params_compared"] == 2 * 11 + 2  # per layer 7 projections + 4 norms; embedding + final norm
    assert out["max_grad_rel_err_fast_bf16[sdpa]"] < 0.05
