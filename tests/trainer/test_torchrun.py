"""A real 2-process torchrun (gloo, CPU) run: data parallel over both ranks, one result from rank 0."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

from trainbench.trainer import contract as c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "r.json"
    args = [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    args += ["-m", "trainbench.trainer", "--model", "tiny-qwen3", "--type", "sft-full", "--seq-len", "128"]
    args += ["--steps", "3", "--warmup-steps", "1", "--device", "cpu", "--metrics-port", "0", "--ac", "recompute"]
    args += ["--batch-size", "2", "--micro-batch", "1", "--output", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    result_lines = [ln for ln in p.stdout.splitlines() if ln.startswith(c.RESULT_LINE_PREFIX)]
    assert len(result_lines) == 1  # rank 0 only
    port_lines = [ln for ln in p.stdout.splitlines() if ln.startswith(c.METRICS_PORT_LINE_PREFIX)]
    assert len(port_lines) == 1
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["status"] == "ok"
    assert res["tokens_per_step"] == 2 * 128 * 2  # global: batch x seq x ranks
    for s in res["steps"]:
        assert abs(s["mfu"] - 100 * res["flops_per_token"] * s["tps"] / (res["peak_flops"] * 2)) < 1e-9 * s["mfu"]
        assert abs(s["tps"] - res["tokens_per_step"] / s["step_time"]) < 1e-9 * s["tps"]
    # the ranks trained on different data, yet the replicas' weights are identical (gradients were averaged)
    assert res["replica_spread"] == 0.0
    assert res["losses"][0] != res["losses"][-1]
