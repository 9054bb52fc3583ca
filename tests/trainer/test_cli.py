"""The command line: real subprocess runs, the result line and file, exit codes 2 (BadConfig) and 3 (OOM)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest
import torch

from trainbench.trainer import contract as c
from trainbench.trainer.bench import for_termination_log, main
from trainbench.trainer.config import parse_args

TINY = ["--model", "tiny-qwen3", "--seq-len", "128", "--steps", "2", "--warmup-steps", "1", "--device", "cpu"]
TINY += ["--metrics-port", "-1"]


def run_cli(args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "trainbench.trainer", *args], capture_output=True, text=True, env=env, timeout=120, **kw
    )


def error_lines(stderr: str) -> list[str]:
    """The failure reason: exactly one `trainbench bench: <Reason>: ...` line, the last one, no traceback."""
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("trainbench bench:")]
    assert stderr.strip().splitlines()[-1] == lines[-1]
    return lines


def result_line(stdout: str) -> dict:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(c.RESULT_LINE_PREFIX), last
    return json.loads(last[len(c.RESULT_LINE_PREFIX) :])


def test_subprocess_run_prints_table_and_result_and_writes_output(tmp_path):
    out = tmp_path / "sub" / "result.json"
    p = run_cli(
        [*TINY, "--type", "rl-full", "--ac", "recompute", "--output", str(out), "--case", "c1", "--run-name", "r1"]
        + ["--json"]
    )
    assert p.returncode == 0, p.stderr
    res = result_line(p.stdout)
    assert json.loads(out.read_text()) == res
    assert res["status"] == "ok" and res["config"]["case"] == "c1" and res["config"]["run"] == "r1"
    assert res["config"]["model"] == "tiny-qwen3" and res["config"]["hf_name"] == "trainbench/tiny-qwen3"
    assert "MFU" in p.stderr and "TPS" in p.stderr  # the readable table (on stderr with --json)
    env = res["environment"]
    assert env["torch"] == torch.__version__ and env["gpu_count"] == 0 and env["python"]
    assert "Traceback" not in p.stderr


def test_trainbench_bench_command_dry_run():
    p = subprocess.run(
        [sys.executable, "-m", "trainbench.cli", "bench", "--model", "Qwen/Qwen3-4B", "--type", "rl-lora"]
        + ["--seq-len", "16384", "--dry-run", "--peak-tflops", "989", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    res = result_line(p.stdout)
    assert res["status"] == "dry-run" and res["peak_flops"] == 989e12 and res["peak_flops_source"] == "override"
    assert res["n_active"] > 3e9 and res["flops_per_token"] > 4 * res["n_active"]


def test_unknown_model_is_exit_2_with_one_line_and_failed_json(tmp_path):
    out = tmp_path / "r.json"
    p = run_cli(["--model", "no-such-model", "--output", str(out), "--json"])
    assert p.returncode == c.EXIT_BAD_CONFIG
    lines = error_lines(p.stderr)
    assert len(lines) == 1 and "BadConfig" in lines[0] and "no-such-model" in lines[0]
    res = json.loads(out.read_text())
    assert res["status"] == "failed" and res["error"]["reason"] == "BadConfig"
    assert result_line(p.stdout) == res


BAD = {
    "steps": (["--steps", "0"], "--steps"),
    "seq-len": (["--seq-len", "40", "--docs-per-seq", "4"], "too short"),
    "attn": (["--attn", "warp-drive"], "warp-drive"),
    "fa3-missing": (["--attn", "fa3"], "flash_attn_interface"),
    "flex-cpu": (["--attn", "flex"], "no backward pass on the CPU"),
    "cudnn-cpu": (["--attn", "sdpa-cudnn"], "needs a CUDA device"),
    "flash-packed": (["--attn", "sdpa-flash"], "packed documents"),
    "ep-world": (["--ep", "2"], "world size"),
    "ep-dense": (["--ep", "1", "--cp", "1", "--model", "tiny-qwen3"], None),
    "lora-no-targets": (["--type", "rl-lora", "--lora-targets", "nothing_proj"], "no LoRA support"),
    "batch": (["--batch-size", "3", "--micro-batch", "2"], "multiple"),
    "weights": (["--weights", "/nonexistent/model.safetensors"], "weights"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_exit_2(name, capsys):
    extra, needle = BAD[name]
    code = main([*TINY, *extra])
    err = capsys.readouterr().err
    if needle is None:  # control: a valid configuration passes
        assert code == 0
        return
    assert code == c.EXIT_BAD_CONFIG, err
    lines = error_lines(err)
    assert len(lines) == 1 and needle in lines[0]


def test_oom_inside_the_step_is_exit_3(tmp_path, capsys):
    """A real torch.OutOfMemoryError raised from inside the forward pass (CUDA's OOM type, via a module hook)."""
    calls = []

    def hook(module, args):
        calls.append(module)
        if len(calls) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        code = main([*TINY, "--output", str(tmp_path / "r.json")])
    finally:
        handle.remove()
    assert code == c.EXIT_OOM
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and "OutOfMemory" in lines[0]
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["status"] == "failed" and res["error"]["reason"] == "OutOfMemory"


def test_real_host_oom_is_exit_3():
    """A real allocation failure: the address space is capped and a 32k x 32k eager mask does not fit."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    p = run_cli(
        ["--model", "tiny-qwen3", "--seq-len", "32768", "--ac", "none", "--attn", "eager", "--steps", "1"]
        + ["--warmup-steps", "0", "--metrics-port", "-1", "--device", "cpu", "--docs-per-seq", "1", "--json"],
        preexec_fn=cap,
    )
    assert p.returncode == c.EXIT_OOM, p.stderr[-2000:]
    assert "OutOfMemory" in error_lines(p.stderr)[0]
    assert result_line(p.stdout)["error"]["reason"] == "OutOfMemory"


def test_termination_log_of_a_real_run_holds_the_summary_within_4k(tmp_path):
    term = tmp_path / "termination-log"
    term.write_text("")  # exists, as the kubelet's file does
    p = subprocess.run(
        [sys.executable, "-m", "trainbench.trainer", "--model", "tiny-qwen3", "--steps", "60", "--seq-len", "64"]
        + ["--warmup-steps", "1", "--device", "cpu", "--metrics-port", "-1", "--docs-per-seq", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, TRAINBENCH_TERMINATION_LOG=str(term)),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    full = result_line(p.stdout)
    text = term.read_text()
    assert len(full["steps"]) == 61 and len(text.encode()) <= 4096 < len(json.dumps(full))
    short = json.loads(text)
    assert short["metrics"] == full["metrics"] and short["status"] == "ok" and "steps" not in short
    # the cold-start cost survives the trimming, and the operator reads it from there
    assert short["first_step_s"] == full["steps"][0]["step_time"] > 0
    from trainbench.operator.results.document import first_step_seconds

    assert first_step_seconds(short) == first_step_seconds(full) == full["first_step_s"]


def test_termination_log_is_truncated_to_4k_dropping_per_step_lists_first():
    res = {
        "schema": c.RESULT_SCHEMA,
        "status": "ok",
        "config": {"model": "m", "seq_len": 8},
        "metrics": {"tps": {"mean": 1.0}},
        "steps": [{"step": i, "tps": 1.0 * i} for i in range(500)],
        "losses": [0.5] * 500,
        "environment": {"hostname": "h"},
    }
    text = for_termination_log(res)
    assert len(text.encode()) <= 4096
    short = json.loads(text)
    assert "steps" not in short and "losses" not in short and short["metrics"] == res["metrics"]
    assert short["environment"] == res["environment"] and short["truncated"] is True
    small = {"status": "ok", "steps": [1]}
    assert json.loads(for_termination_log(small)) == small


def test_cli_accepts_exactly_what_the_planner_emits():
    from trainbench.operator.plan import Case

    case = Case(
        id="x", model="qwen3-0.6b", hf_name="Qwen/Qwen3-0.6B", type="rl-lora", seq_len=16384, ac="recompute",
        attn="auto", ep=1, cp=1, pool="h100", nodes=1, gpus_per_node=1, image="img", steps=5, warmup_steps=1,
        micro_batch=1, batch_size=2, compile=False, timeout_seconds=60, peak_tflops=989.0, lora_rank=16,
        lora_alpha=32.0, lora_targets=("q_proj", "v_proj"),
    )  # fmt: skip
    cfg = parse_args(case.trainer_args(run="nightly", metrics_port=0))
    assert (cfg.model, cfg.type, cfg.seq_len, cfg.ac, cfg.batch_size, cfg.peak_tflops) == (
        "qwen3-0.6b", "rl-lora", 16384, "recompute", 2, 989.0
    )  # fmt: skip
    assert cfg.lora_targets == ("q_proj", "v_proj") and cfg.run == "nightly" and cfg.metrics_port == 0
