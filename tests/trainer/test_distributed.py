"""Real 2-process torchrun (gloo, CPU) runs: DDP and FSDP2 data parallel over both ranks, one result from rank 0."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from trainbench.trainer import contract as c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path, dp: str, extra=()) -> tuple[dict, str]:
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert exe, "torchrun comes with torch"
    out = tmp_path / f"r-{dp}.json"
    args = [exe, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    args += ["-m", "trainbench.trainer", "--model", "tiny-qwen3", "--seq-len", "128", "--steps", "3"]
    args += ["--warmup-steps", "1", "--device", "cpu", "--metrics-port", "0", "--batch-size", "2"]
    args += ["--micro-batch", "1", "--output", str(out), "--dp", dp, "--json", *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text()), p.stdout


def check(res: dict, stdout: str) -> None:
    assert len([ln for ln in stdout.splitlines() if ln.startswith(c.RESULT_LINE_PREFIX)]) == 1  # rank 0 only
    assert len([ln for ln in stdout.splitlines() if ln.startswith(c.METRICS_PORT_LINE_PREFIX)]) == 1
    assert res["world_size"] == 2 and res["status"] == "ok"
    assert res["tokens_per_step"] == 2 * 128 * 2  # global: batch x seq x ranks
    for s in res["steps"]:
        assert abs(s["mfu"] - 100 * res["flops_per_token"] * s["tps"] / (res["peak_flops"] * 2)) < 1e-9 * s["mfu"]
        assert abs(s["tps"] - res["tokens_per_step"] / s["step_time"]) < 1e-9 * s["tps"]


@pytest.mark.parametrize("type_,ac", [("sft-full", "recompute"), ("rl-lora", "selective")])
def test_ddp_and_fsdp2_train_the_same(tmp_path, type_, ac):
    extra = ["--type", type_, "--ac", ac]
    ddp, out_ddp = torchrun(tmp_path, "ddp", extra)
    check(ddp, out_ddp)
    # the ranks trained on different data, yet the replicas' weights are identical (gradients were averaged)
    assert ddp["data_parallel"] == "ddp" and ddp["replica_spread"] == 0.0
    assert ddp["losses"][0] != ddp["losses"][-1]
    fsdp, out_fsdp = torchrun(tmp_path, "fsdp", extra)
    check(fsdp, out_fsdp)
    assert fsdp["data_parallel"] == "fsdp" and fsdp["n_trainable"] == ddp["n_trainable"]
    # sharded weights, gradients and optimizer state: the same training as replicated DDP
    assert fsdp["losses"] == pytest.approx(ddp["losses"], rel=1e-5)
