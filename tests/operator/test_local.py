"""The local executor end to end: real trainer processes on the CPU, the same collect/report code.

Each test runs `python -m trainbench.cli run ... --local` as a user would. The smoke suite is the README's
main job (examples/cpu-smoke.yaml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainbench.operator.report.markdown import fmt_seconds, fmt_tps

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "cpu-smoke.yaml"


def trainbench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainbench.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def write_manifest(path: Path, name: str, cases: list[dict], steps: int = 3) -> Path:
    spec = {
        "suite": name,
        "pools": [{"name": "cpu", "hardware": "CPU"}],
        "matrix": {"models": [cases[0]["model"]], "types": ["sft-full"], "seqLens": [128], "ac": ["none"]},
        "steps": steps,
        "warmupSteps": 1,
        "timeoutSeconds": 300,
    }
    spec["matrix"]["attn"] = [cases[0].get("attn", "sdpa")]
    spec["matrix"]["include"] = cases[1:]
    doc = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": name}, "spec": spec}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_smoke_suite_end_to_end_with_measured_numbers_in_the_report(tmp_path):
    out = tmp_path / "smoke"
    p = trainbench("run", str(SMOKE), "--local", "--out", str(out))
    assert p.returncode == 0, p.stdout + p.stderr  # how long it takes belongs in benchmarks, not here
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "trainbench.dev/results/v1" and results["environment"]["executor"] == "local"
    assert results["summary"] == {
        "cases": 5,
        "succeeded": 5,
        "failed": 0,
        "skipped": 0,
        "pending": 0,
        "metrics_unavailable": 0,
        "regressions": 0,
        "suspected": 0,
        "cleared": 0,
        "tainted": 0,
    }
    report = (out / "report.md").read_text()
    assert "5 cases, 5 passed, 0 failed, no baseline" in report
    for case in results["cases"]:
        m = case["metrics"]
        assert m["tps"]["mean"] > 0 and m["tps"]["n"] == 6 and m["mfu"]["mean"] > 0
        assert case["hardware"] == "1xCPU" and case["peak_flops_source"] == "cpu-nominal"
        assert (out / "logs" / f"{case['id']}.log").exists() and (out / "cases" / f"{case['id']}.json").exists()
        # the report holds the measured numbers
        assert f"| {fmt_tps(m['tps']['mean'])} | {fmt_seconds(m['step_time']['mean'])} |" in report
    assert {c["model"] for c in results["cases"]} == {"tiny-qwen3", "tiny-llama", "tiny-qwen3-moe"}
    assert "[5/5]" in p.stderr and "step" in p.stderr  # progress bars, one per case
    assert f"{out / 'report.md'}: 5 cases, 5 passed, 0 failed" in p.stdout


def test_failure_classification_history_baseline_and_trend_plot(tmp_path):
    m = write_manifest(
        tmp_path / "m.yaml",
        "two",
        [{"model": "tiny-qwen3", "attn": "sdpa"}, {"model": "tiny-qwen3", "type": "sft-full", "attn": "fa3"}],
    )
    out = tmp_path / "out"
    first = trainbench("run", str(m), "--local", "--out", str(out), "--no-progress")
    assert first.returncode == 1, first.stdout + first.stderr  # a case failed
    r1 = json.loads((out / "results.json").read_text())
    failed = next(c for c in r1["cases"] if c["attn"] == "fa3")
    assert (failed["phase"], failed["reason"]) == ("Failed", "BadConfig")
    assert "fa3" in failed["message"]
    report = (out / "report.md").read_text()
    assert "## Failed Benchmarks" in report and "**BadConfig**: --attn fa3 needs" in report
    assert "2 cases, 1 passed, 1 failed, no baseline" in report

    second = trainbench("run", str(m), "--local", "--out", str(out), "--no-progress")
    assert second.returncode == 1
    r2 = json.loads((out / "results.json").read_text())
    assert r2["run"] != r1["run"]
    assert r2["baseline"]["source"] == "history" and r2["baseline"]["matched"] == 1
    ok = next(c for c in r2["cases"] if c["phase"] == "Succeeded")
    assert ok["baseline"]["run"] == r1["run"] and set(ok["verdicts"]) >= {"tps", "mfu", "step_time"}
    history = json.loads((out / "history.json").read_text())
    assert [r["run"] for r in history["runs"]] == [r1["run"], r2["run"]]
    report = (out / "report.md").read_text()
    assert "(1 of 2 cases matched)" in report and "## History (last 10 runs)" in report
    assert "![tiny-qwen3: TPS and MFU over the last runs](plots/trend-tiny-qwen3.png)" in report
    assert (out / "plots" / "trend-tiny-qwen3.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_cleanly_and_keeps_finished_results(tmp_path, sig):
    # a quick first case (128 tokens a step), a long second one (4096 tokens a step), a third that never starts;
    # 60 steps: the second case still runs when this test, polling its log, sees it start
    m = write_manifest(
        tmp_path / "m.yaml",
        "stop",
        [{"model": "tiny-qwen3", "attn": "sdpa"}, {"model": "tiny-llama", "seqLen": 4096}, {"model": "tiny-qwen3-moe"}],
        steps=60,
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainbench.cli", "run", str(m), "--local", "--out", str(out), "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: SIGINT delivered. A test runner started in the background by a non-interactive shell
        # (`cmd &`) ignores SIGINT, children inherit that, and Python then installs no Ctrl-C handler: the run went
        # on to the end (exit 0) in a CI run started that way
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        started = False
        while time.monotonic() < deadline and not started:
            logs = list((out / "logs").glob("tiny-llama-*.log")) if (out / "logs").exists() else []
            started = bool(logs) and "TRAINBENCH_METRICS_PORT" in logs[0].read_text()
            time.sleep(0.1)
        assert started, "the second case never started"
        proc.send_signal(sig)  # what Ctrl-C (or a cancelled CI job) does to the executor
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted; writing the results of the finished cases" in stderr
    results = json.loads((out / "results.json").read_text())
    phases = [(c["model"], c["phase"], c["reason"]) for c in results["cases"]]
    assert phases == [
        ("tiny-qwen3", "Succeeded", None),
        ("tiny-llama", "Failed", "Interrupted"),
        ("tiny-qwen3-moe", "Skipped", "Interrupted"),
    ]
    assert results["cases"][0]["metrics"]["tps"]["mean"] > 0  # the finished case kept its numbers
    report = (out / "report.md").read_text()
    assert "3 cases, 1 passed, 1 failed, 1 skipped" in report and "**Interrupted**" in report
    assert not (out / "history.json").exists()  # an interrupted run is not a baseline for the next one
    pid = int(results["cases"][1]["job"].split()[1])
    try:  # the trainer process is gone, not orphaned
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_cases_this_machine_cannot_run_are_skipped_with_the_reason(tmp_path):
    from trainbench.operator.api import parse_spec
    from trainbench.operator.local import LocalOptions, run_local

    spec = parse_spec(
        {
            "pools": [{"name": "big", "gpusPerNode": 8}, {"name": "multi", "gpusPerNode": 1, "nodes": 2}],
            "matrix": {"models": ["tiny-qwen3"], "seqLens": [128]},
        }
    )
    with open(os.devnull, "w") as quiet:
        done = run_local("skip", spec, LocalOptions(out=tmp_path, device="cpu", progress=False, log=quiet))
    cases = {c["pool"]: c for c in done.results["cases"]}
    assert cases["big"]["phase"] == "Skipped" and "needs 8 GPUs" in cases["big"]["message"]
    assert cases["multi"]["phase"] == "Skipped" and "needs 2 nodes" in cases["multi"]["message"]
    assert done.exit_code == 0 and "2 skipped" in done.report
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_gpu_commands_use_torchrun_over_the_local_gpus(tmp_path):
    from trainbench.operator.local import LocalOptions, case_command
    from trainbench.operator.plan import plan

    spec = {
        "pools": [{"name": "one", "gpusPerNode": 1}, {"name": "four", "gpusPerNode": 4}],
        "matrix": {"models": ["qwen3-0.6b"], "seqLens": [8192]},
    }
    one, four = plan(spec)
    opts = LocalOptions(out=tmp_path)
    cmd = case_command(one, "r", "cuda", opts, tmp_path / "x.json")
    assert cmd[:3] == [sys.executable, "-m", "trainbench.trainer"]
    assert cmd[3:] == one.trainer_args(run="r", metrics_port=0) + [
        "--device",
        "cuda",
        "--output",
        str(tmp_path / "x.json"),
    ]
    cmd = case_command(four, "r", "cuda", opts, tmp_path / "y.json")
    assert cmd[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "-m"]
    assert cmd[7] == "trainbench.trainer" and "--metrics-port" in cmd


def test_a_case_past_its_timeout_is_stopped_and_classified(tmp_path):
    import dataclasses

    from trainbench.operator.local import LocalOptions, run_case
    from trainbench.operator.plan import plan

    spec = {"pools": [{"name": "cpu"}], "matrix": {"models": ["tiny-llama"], "seqLens": [4096], "ac": ["none"]}}
    case = dataclasses.replace(plan(spec)[0], steps=500, timeout_seconds=6)
    outcome = run_case(case, "t", "cpu", 0, LocalOptions(out=tmp_path, progress=False), "timeout")
    assert (outcome["phase"], outcome["reason"]) == ("Failed", "Timeout")
    assert "timeoutSeconds" in outcome["message"]


def test_report_from_the_trainers_own_output_files(tmp_path):
    common = ["--device", "cpu", "--seq-len", "128", "--steps", "2", "--warmup-steps", "1", "--metrics-port", "-1"]
    ok = trainbench("bench", "--model", "tiny-qwen3", *common, "--output", str(tmp_path / "ok.json"))
    assert ok.returncode == 0, ok.stderr
    bad = trainbench("bench", "--model", "tiny-qwen3", "--attn", "fa3", *common, "--output", str(tmp_path / "bad.json"))
    assert bad.returncode == 2
    p = trainbench("report", str(tmp_path / "ok.json"), str(tmp_path / "bad.json"))
    assert p.returncode == 0, p.stderr
    assert "2 cases, 1 passed, 1 failed" in p.stdout
    tps = json.loads((tmp_path / "ok.json").read_text())["metrics"]["tps"]["mean"]
    assert f"| {fmt_tps(tps)} |" in p.stdout
    assert "**BadConfig**: --attn fa3 needs" in p.stdout
