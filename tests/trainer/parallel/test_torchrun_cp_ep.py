"""Real 2-process torchrun (gloo, CPU) runs of context and expert parallelism against one process / EP=1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainbench.trainer.bench import run_bench
from trainbench.trainer.config import parse_args

HERE = Path(__file__).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd() -> list[str]:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert exe, "torchrun comes with torch"
    return [exe, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]


def bench_args(model: str, out, extra=()) -> list[str]:
    args = ["--model", model, "--seq-len", "128", "--steps", "3", "--warmup-steps", "0", "--device", "cpu"]
    args += ["--metrics-port", "-1", "--impl", "fast", "--lr", "1e-3", "--output", str(out), *extra]
    return args


def torchrun_bench(tmp_path, name: str, model: str, extra) -> dict:
    out = tmp_path / f"{name}.json"
    cmd = [*torchrun_cmd(), "-m", "trainbench.trainer", *bench_args(model, out, extra)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


def test_cp_attention_loss_and_grads_match_one_process(tmp_path):
    out = tmp_path / "cp.json"
    cmd = [*torchrun_cmd(), str(HERE / "cp_worker.py"), str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert sorted(res) == ["rl", "rl-flex", "sft", "sft-flex"]
    for kind, r in res.items():
        assert r["loss_cp"] == pytest.approx(r["loss_ref"], rel=1e-5, abs=1e-6), kind
        assert len(r["grad_rel"]) == (0 if "flex" in kind else 3)  # flex: forward only on the CPU
        for name, err in r["grad_rel"].items():
            assert err < 1e-4, (kind, name, err)


@pytest.mark.parametrize("dp,ac", [("ddp", "none"), ("fsdp", "recompute")])
def test_cp2_trains_like_one_process(tmp_path, dp, ac):
    extra = ["--fixed-batch", "--batch-size", "2", "--micro-batch", "1", "--ac", ac]
    one = run_bench(parse_args(bench_args("tiny-qwen3", tmp_path / "one.json", extra)))
    cp = torchrun_bench(tmp_path, "cp2", "tiny-qwen3", [*extra, "--cp", "2", "--dp", dp])
    assert cp["parallel"] == {"world_size": 2, "dp": 1, "cp": 2, "ep": 1} and cp["data_parallel"] == dp
    assert cp["attn_backend"].startswith("cp-zigzag")
    assert one["losses"][0] != one["losses"][-1]  # it trains
    assert cp["losses"] == pytest.approx(one["losses"], rel=1e-5)
    # a CP group processes one sequence: its tokens count once; MFU divides by both GPUs
    assert cp["tokens_per_step"] == one["tokens_per_step"] == 2 * 128
    for s in cp["steps"]:
        assert s["tps"] == pytest.approx(cp["tokens_per_step"] / s["step_time"], rel=1e-9)
        assert s["mfu"] == pytest.approx(100 * cp["flops_per_token"] * s["tps"] / (cp["peak_flops"] * 2), rel=1e-9)


def test_ep2_trains_like_ep1(tmp_path):
    ep1 = torchrun_bench(tmp_path, "ep1", "tiny-qwen3-moe", ["--ep", "1", "--dp", "ddp"])
    ep2 = torchrun_bench(tmp_path, "ep2", "tiny-qwen3-moe", ["--ep", "2"])
    assert ep2["parallel"] == {"world_size": 2, "dp": 1, "cp": 1, "ep": 2}
    assert ep1["losses"][0] != ep1["losses"][-1]
    assert ep2["losses"] == pytest.approx(ep1["losses"], rel=1e-5)
    assert ep2["tokens_per_step"] == ep1["tokens_per_step"] == 2 * 128  # every rank has its own data
    assert ep2["replica_spread"] == 0.0  # the replicated (non-expert) weights stayed identical
    assert ep2["n_trainable"] < ep1["n_trainable"]  # this rank holds half of the experts
