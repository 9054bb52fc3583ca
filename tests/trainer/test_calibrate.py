"""`--type calibrate` as a real process on the CPU: the ceilings in the result JSON and on /metrics, the table, and
the one-line refusals (no GPU for --device cuda, more than one rank); the floor formulas with known numbers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from trainbench.trainer import contract as c
from trainbench.trainer.specs import (
    causal_attention_fwd_flops,
    floor_seconds,
    pct_of_floor,
    resolve_model,
)

CAL = ["--type", "calibrate", "--device", "cpu", "--steps", "2", "--warmup-steps", "1"]


def trainer(args, env=None, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "trainbench.trainer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def test_calibrate_measures_ceilings_into_the_result_and_metrics(tmp_path):
    out = tmp_path / "cal.json"
    proc = trainer([*CAL, "--metrics-port", "0", "--linger", "30", "--output", str(out), "--pool", "p1"])
    port = None
    for line in proc.stdout:
        if line.startswith(c.METRICS_PORT_LINE_PREFIX):
            port = int(line[len(c.METRICS_PORT_LINE_PREFIX) :])
            break
    assert port, proc.stderr.read()
    deadline = time.monotonic() + 120
    text = ""

    def done(text):
        return any('trainbench_state="done"' in ln and ln.endswith(" 1.0") for ln in text.splitlines())

    while time.monotonic() < deadline and not done(text):  # lingers with state done
        time.sleep(0.3)
        with contextlib.suppress(OSError):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    rest = ""
    for line in proc.stdout:  # the table, then the output file, then the lingering /metrics
        rest += line
        if line.startswith("ceilings:"):
            break
    while time.monotonic() < deadline and not out.exists():
        time.sleep(0.2)
    time.sleep(1)
    proc.terminate()
    proc.wait(30)
    assert done(text), text[-2000:]
    series = {ln.split("kernel=")[1].split('"')[1]: float(ln.split()[-1]) for ln in text.splitlines()
              if ln.startswith(c.M_CAL_TFLOPS + "{")}  # fmt: skip
    assert series["gemm"] > 0 and series["attention"] > 0 and 'pool="p1"' in text
    res = json.loads(out.read_text())
    cal = res["calibration"]
    assert res["status"] == "ok" and res["schema"] == c.RESULT_SCHEMA and res["config"]["type"] == "calibrate"
    assert cal["gemm_tflops"] == max(g["tflops"] for g in cal["gemms"]) == pytest.approx(series["gemm"])
    assert cal["attention_tflops"] == pytest.approx(series["attention"]) and cal["dtype"] == "float32"
    (att,) = cal["attention"]  # the CPU: what SDPA picks, at a short sequence, head_dim 128
    assert att["head_dim"] == 128 and att["seq_len"] == 512 and att["train_tflops"] == cal["attention_tflops"]
    assert "ceilings: GEMM" in rest and "attention causal b=1 h=4 s=512 d=128" in rest


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--device", "cuda"], {"CUDA_VISIBLE_DEVICES": ""}, "--device cuda but no CUDA/ROCm device is visible"),
        ([], {"WORLD_SIZE": "2"}, "--type calibrate measures one device: run it as one process, not 2 ranks"),
    ],
)
def test_calibrate_refuses_what_it_cannot_measure_in_one_line(tmp_path, args, env, says):
    out = tmp_path / "cal.json"
    proc = trainer([*CAL, "--metrics-port", "-1", "--output", str(out), *args], env=env)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == c.EXIT_BAD_CONFIG, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == f"trainbench bench: BadConfig: {says}"
    assert json.loads(out.read_text())["error"] == {"reason": "BadConfig", "message": says}


def test_floor_formulas_with_known_numbers():
    # 2*2*b*h*s*s*d/2: b=2, h=16, s=1024, d=128
    assert causal_attention_fwd_flops(2, 16, 1024, 128) == 2 * 2 * 2 * 16 * 1024 * 1024 * 128 / 2
    # 8e12 GEMM FLOPs at 800 TF/s = 10 ms, 1e12 attention FLOPs at 500 TF/s = 2 ms: floor 12 ms
    floor = floor_seconds(8e12, 1e12, 800e12, 500e12)
    assert floor == pytest.approx(0.012)
    assert pct_of_floor(floor, 0.024) == pytest.approx(50.0)  # twice the floor: half the attainable speed
    assert pct_of_floor(floor, 0.010) == pytest.approx(120.0)  # faster than the floor: cannot be real


def test_done_flops_split_adds_up_and_puts_attention_apart():
    spec = resolve_model("qwen3-0.6b")
    docs = [4096, 2048, 1024, 1024]
    gemm, attn = spec.done_flops_split(docs)
    assert gemm == 6 * spec.n_active()
    assert attn == pytest.approx(spec.causal_attention_flops(docs) / sum(docs))
    assert gemm + attn == pytest.approx(spec.done_flops_per_token(docs))
    lora_gemm, lora_attn = spec.done_flops_split(docs, lora_rank=16)
    assert lora_attn == attn and lora_gemm == 4 * spec.n_active() + 6 * spec.lora_params(16)


def test_calibrate_dry_run_names_what_it_would_measure(tmp_path):
    out = tmp_path / "cal.json"
    proc = trainer([*CAL, "--metrics-port", "-1", "--dry-run", "--output", str(out)])
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    res = json.loads(out.read_text())
    assert res["status"] == "dry-run" and "calibration" not in res
    assert res["attention"] == {"backends": ["sdpa"], "seq_len": 512, "head_dim": 128} and len(res["gemms"]) == 3
