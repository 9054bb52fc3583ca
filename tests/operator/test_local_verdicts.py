"""Verdicts a team can act on, end to end on the CPU with real trainer processes (issue: the same code run twice
flagged -70% regressions): repeats, confirmation re-runs, Confirmed vs Cleared, tainted cases.

A "slower build" is the real trainer with its optimizer step made slower by a sleep (a wrapper command that
patches `trainbench.trainer.train._optimizer_step` before calling the trainer's own main), so everything else,
processes, metrics, collection, verdicts, is what users run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainbench.operator.api import parse_spec
from trainbench.operator.local import LocalOptions, run_local

ROOT = Path(__file__).resolve().parents[2]

# the trainer, with each optimizer step 1.5 s slower while SLOW_MARKER exists (deleted after `uses` processes)
SLOW = """
import os, sys, time
import trainbench.trainer.train as t
marker = sys.argv.pop(1)
if os.path.exists(marker):
    left = int(open(marker).read() or "0")
    if left <= 1:
        os.remove(marker)
    else:
        open(marker, "w").write(str(left - 1))
    orig = t._optimizer_step
    def slow(*a, **k):
        time.sleep(1.5)
        return orig(*a, **k)
    t._optimizer_step = slow
from trainbench.trainer.bench import main
sys.exit(main())
"""


def _spec(**over):
    spec = {
        "suite": "verdicts",
        "pools": [{"name": "cpu", "hardware": "CPU"}],
        "matrix": {"models": ["tiny-qwen3"], "types": ["sft-full"], "seqLens": [128], "ac": ["none"], "attn": ["sdpa"]},
        "steps": 4,
        "warmupSteps": 1,
        "timeoutSeconds": 300,
    }
    spec.update(over)
    return parse_spec(spec)


def _run(out: Path, marker: Path | None = None, slow_processes: int = 0, **spec) -> dict:
    if marker is not None and slow_processes:
        marker.write_text(str(slow_processes))
    cmd = [sys.executable, "-c", SLOW, str(marker or out / "no-marker")]
    opts = LocalOptions(out=out, device="cpu", progress=False, plots=False, trainer_cmd=cmd, log=io.StringIO())
    run = run_local("verdicts", _spec(**spec), opts)
    return run.results


def _case(results: dict) -> dict:
    (case,) = results["cases"]
    return case


def test_slower_build_is_confirmed_and_identical_code_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINBENCH_MAX_OTHER_CPU", "64")  # about confirmation, not the environment (below)
    out, marker = tmp_path / "out", tmp_path / "slow"
    for _ in range(2):  # the suite's history: two runs of the normal build
        first = _run(out)
        assert first["summary"]["regressions"] == 0
    # a slower build: the first process and both confirming re-runs are slow -> Confirmed
    slow = _run(out, marker, slow_processes=3)
    case = _case(slow)
    assert case["verdict"]["state"] == "confirmed", case["verdict"]
    assert case["verdicts"]["tps"]["status"] == "regression" and case["verdicts"]["tps"]["change_pct"] < -30
    assert {v["status"] for k, v in case["verdicts"].items() if k in ("tps", "mfu", "step_time")} == {"regression"}
    assert [r["confirm"] for r in case["repeats"]] == [False, True, True]
    assert slow["summary"]["regressions"] == 1 and slow["summary"]["suspected"] == 0
    report = (out / "report.md").read_text()
    assert "**Confirmed**" in report and "1 regression" in report
    # a slowdown moves the baseline only when accepted: the next slow run is still compared with the fast runs
    again = _run(out, marker, slow_processes=3)
    assert _case(again)["verdict"]["state"] == "confirmed" and slow["run"] not in _case(again)["baseline"]["runs"]
    # ... until a person accepts it (trainbench baseline accept): the slow build is then the baseline
    p = subprocess.run(
        [sys.executable, "-m", "trainbench.cli", "baseline", "accept", again["run"], "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and "accepted as the baseline" in p.stdout, p.stdout + p.stderr
    accepted = _run(out, marker, slow_processes=3)
    assert _case(accepted)["baseline"]["runs"] == [again["run"]]
    assert _case(accepted)["verdict"]["state"] in (None, "cleared") and accepted["summary"]["regressions"] == 0
    # the slowdown is removed: an improvement, which moves the baseline by itself
    back = _run(out)
    assert back["summary"]["regressions"] == 0
    assert {v["status"] for v in _case(back)["verdicts"].values() if v["metric"] == "tps"} == {"improvement"}


def test_a_one_off_slow_process_is_cleared_by_its_re_runs(tmp_path, monkeypatch):
    # the default environment rule: re-runs slowed by someone else's load are tainted, never a confirmation
    monkeypatch.delenv("TRAINBENCH_MAX_OTHER_CPU", raising=False)
    out, marker = tmp_path / "out", tmp_path / "slow"
    _run(out)
    _run(out)
    blip = _run(out, marker, slow_processes=1)  # only the first process of this run is slow
    case = _case(blip)
    # never a regression: suspected and then cleared by its two normal re-runs, or (when the two baseline
    # processes spread too widely for a single process to stand out, or the machine was busy: tainted) no state
    assert case["verdict"]["state"] in ("cleared", None), case["verdict"]
    assert blip["summary"]["regressions"] == 0 and blip["summary"]["suspected"] == 0
    if case["verdict"]["state"] == "cleared":
        assert [r["confirm"] for r in case["repeats"]] == [False, True, True]
        assert blip["summary"]["cleared"] == 1 and "**Cleared**" in (out / "report.md").read_text()


def test_repeats_are_kept_with_both_spreads(tmp_path):
    results = _run(tmp_path / "out", repeats=3)
    case = _case(results)
    assert [r["repeat"] for r in case["repeats"]] == [1, 2, 3]
    assert all(r["phase"] == "Succeeded" and r["metrics"]["tps"]["mean"] > 0 for r in case["repeats"])
    tps = case["metrics"]["tps"]
    means = sorted(r["metrics"]["tps"]["mean"] for r in case["repeats"])
    assert tps["mean"] == pytest.approx(means[1])  # median of three
    assert tps["repeats"] == 3 and tps["run_std"] > 0 and tps["std"] > 0
    assert (tmp_path / "out" / "cases" / f"{case['id']}-r3.json").exists()


BUSY = "import time\nt = time.time()\nwhile time.time() - t < 120: pass\n"


def test_a_case_run_beside_a_cpu_hog_is_tainted_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINBENCH_MAX_OTHER_CPU", raising=False)  # the default rule
    out = tmp_path / "out"
    _run(out)
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
    try:
        time.sleep(0.5)
        loaded = _run(out)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    case = _case(loaded)
    assert case["verdict"]["tainted"], case["verdict"]
    assert case["verdict"]["tainted"][0].startswith("host load: other processes used")
    assert case["verdict"]["state"] != "confirmed" and loaded["summary"]["tainted"] == 1
    assert "**Tainted**: host load" in (out / "report.md").read_text()


def test_the_smoke_suite_three_times_in_a_row_flags_no_regression(tmp_path):
    """The README's main job, run three times into one folder (the issue: the second run flagged -70%)."""
    out = tmp_path / "smoke"
    for i in range(3):
        p = subprocess.run(
            [sys.executable, "-m", "trainbench.cli", "run", str(ROOT / "examples" / "cpu-smoke.yaml"), "--local"]
            + ["--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        results = json.loads((out / "results.json").read_text())
        assert results["summary"]["regressions"] == 0, [c.get("verdict") for c in results["cases"]]
        assert results["summary"]["suspected"] == 0  # every suspect was re-run and decided
        assert (results["baseline"] is None) == (i == 0)
