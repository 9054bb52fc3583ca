"""benchmarks/multigpu.py end to end on the CPU (gloo, tiny configs): every case is a real torchrun of the trainer,
the table has each case's layout, and the scaling line compares a case with its one-process twin. The numbers
mean nothing here; the 2xH200 run is in docs/performance.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "multigpu.py"


def test_multigpu_script_runs_dp_cp_ep_cases(tmp_path):
    out = tmp_path / "mg"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--tiny",
        "--out",
        str(out),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--timeout",
        "120",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = {r["name"]: r["summary"] for r in json.loads((out / "multigpu.json").read_text())}
    assert set(rows) == {"tiny-1", "tiny-2", "tiny-cp2", "tiny-ep2"}
    assert rows["tiny-1"]["world"] == 1 and rows["tiny-2"]["dp"] == "ddp"
    assert rows["tiny-cp2"]["layout"] == "1x cp2 x ep1" and rows["tiny-ep2"]["layout"] == "1x cp1 x ep2"
    assert all(r["status"] == "ok" and r["tps"] > 0 for r in rows.values())
    # the first step starts from the same weights on the same first batch as the one-process run
    assert rows["tiny-2"]["losses"][0] == rows["tiny-1"]["losses"][0]
    assert "tiny-2 vs tiny-1: TPS x" in p.stdout


def test_multigpu_script_refuses_unknown_case(tmp_path):
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path), "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "unknown cases ['nope']" in p.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script would run its benchmark")
def test_cp_attention_bench_imports_and_says_it_needs_a_gpu():
    script = SCRIPT.parent / "cp_attn_bench.py"
    p = subprocess.run([sys.executable, str(script), "--docs", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "needs a CUDA device" in p.stderr, p.stderr[-2000:]


def test_fsdp_overhead_script_runs_the_trainer_plain_and_under_fsdp2_on_one_rank():
    script = SCRIPT.parent / "fsdp_overhead.py"
    trainer = ["--model", "tiny-qwen3", "--seq-len", "128", "--steps", "2", "--warmup-steps", "1", "--device", "cpu"]
    cmd = [sys.executable, str(script), "--only", "plain", "--only", "fsdp2", "--", *trainer]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in p.stdout.splitlines() if line.startswith("| plain") or "| fsdp2" in line]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [("plain", "none"), ("fsdp2", "fsdp")]
    assert rows[0][-1].strip() == "1.00x" and rows[1][-1].strip().endswith("x")
    bad = subprocess.run([sys.executable, str(script), "--only", "nope"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown variants ['nope']" in bad.stderr
