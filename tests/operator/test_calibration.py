"""spec.calibrate: one calibration case per pool, planned before the model cases; the pools' ceilings in the results
document; "% of floor" and the ‡ flags in the report (pure, with known numbers); then a local run of real trainer
processes on the CPU that yields the ceilings and the column."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainbench.operator.api import SpecError, parse_spec
from trainbench.operator.plan import is_calibration, plan
from trainbench.operator.report.markdown import render_compare, render_report
from trainbench.operator.results import document as R
from trainbench.operator.results.baseline import from_results
from trainbench.operator.results.verdict import apply
from trainbench.trainer.contract import RESULT_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "pools": [{"name": "h200", "gpusPerNode": 8}, {"name": "idle", "gpusPerNode": 2}, {"name": "b", "nodes": 2}],
    "matrix": {"models": ["tiny-qwen3"], "seqLens": [128], "pools": ["h200", "b"]},
    "calibrate": True,
}


def test_one_calibration_case_per_pool_in_use_before_the_model_cases():
    cases = plan(SPEC)
    cal = [c for c in cases if is_calibration(c)]
    assert cases[: len(cal)] == cal and [c.pool for c in cal] == ["h200", "b"]  # "idle" plans no case
    for c in cal:
        assert c.type == "calibrate" and c.gpus == 1 and c.nodes == 1 and c.seq_len == 16384
        args = c.trainer_args()
        assert args[args.index("--type") + 1] == "calibrate" and "--pool" in args
    assert [c.id for c in plan(SPEC)] == [c.id for c in cases]  # stable ids
    assert not any(is_calibration(c) for c in plan({**SPEC, "calibrate": False}))
    assert not any(is_calibration(c) for c in plan({k: v for k, v in SPEC.items() if k != "calibrate"}))


@pytest.mark.parametrize("bad", ["yes", 1, {"pools": ["h200"]}])
def test_calibrate_is_a_boolean(bad):
    with pytest.raises(SpecError) as e:
        parse_spec({**SPEC, "calibrate": bad})
    assert e.value.field.startswith("spec.calibrate") or "calibrate" in str(e.value)


def test_a_pool_without_gpus_is_refused():
    with pytest.raises(SpecError) as e:
        parse_spec({**SPEC, "pools": [{"name": "h200", "gpusPerNode": 0}, *SPEC["pools"][1:]]})
    assert e.value.field == "spec.pools[0].gpusPerNode"


def test_compare_leaves_calibration_cases_out():
    _, data = render_compare(results(), results(step_s=0.03))
    assert {c["case"].split("-")[0] for c in data["cases"]} == {"tiny"}


def test_calibrate_is_not_a_matrix_type():
    with pytest.raises(SpecError) as e:
        parse_spec({**SPEC, "matrix": {**SPEC["matrix"], "types": ["calibrate"]}})
    assert e.value.field == "spec.matrix.types[0]" and "'sft-full'" in str(e.value)


# --- the results document and the report, with known numbers ---------------------------------------------------

PEAK = 1000e12  # FLOP/s of one GPU
GEMM_TF, ATTN_TF = 800.0, 500.0  # the pool's ceilings: 80% and 50% of the peak


def _trainer(step_s: float, mfu: float, mfu_done: float) -> dict:
    # 1000 tokens per step on 1 GPU, 9e9 FLOPs per token done of which 1e9 attention: 8e12 GEMM FLOPs at 800 TF/s
    # (10 ms) plus 1e12 attention FLOPs at 500 TF/s (2 ms) = a floor of 12 ms
    s = {"mean": step_s, "std": 0.0, "min": step_s, "max": step_s, "n": 3}
    return {
        "schema": RESULT_SCHEMA,
        "status": "ok",
        "world_size": 1,
        "tokens_per_step": 1000,
        "flops_per_token": 1.2e10,
        "done_flops_per_token": 9e9,
        "done_attention_flops_per_token": 1e9,
        "peak_flops": PEAK,
        "peak_flops_source": "table",
        "metrics": {
            "tps": {"mean": 1000 / step_s, "std": 0.0, "n": 3},
            "mfu": {"mean": mfu, "std": 0.0, "n": 3},
            "mfu_done": {"mean": mfu_done, "std": 0.0, "n": 3},
            "step_time": s,
        },
    }


def _calibration(gemm: float = GEMM_TF, attn: float = ATTN_TF) -> dict:
    return {"schema": RESULT_SCHEMA, "status": "ok", "world_size": 1, "peak_flops": PEAK, "peak_flops_source": "table",
            "calibration": {"gemm_tflops": gemm, "attention_tflops": attn, "attention_backend": "cudnn"}}  # fmt: skip


def results(step_s: float = 0.024, mfu: float = 50.0, mfu_done: float = 40.0, calibrate: bool = True, **cal) -> dict:
    spec = {
        "pools": [{"name": "gpu", "hardware": "H200"}, {"name": "other", "hardware": "H100"}],
        "matrix": {"models": ["tiny-qwen3"], "seqLens": [128]},
        "calibrate": calibrate,
    }
    cases = plan(spec)
    outcomes = {}
    for c in cases:
        result = _calibration(**cal) if is_calibration(c) else _trainer(step_s, mfu, mfu_done)
        outcomes[c.id] = {"phase": "Succeeded", "result": result}
    other_cal = next((c for c in cases if is_calibration(c) and c.pool == "other"), None)
    if other_cal is not None:  # the other pool's calibration failed: its cases have no ceilings
        outcomes[other_cal.id] = {"phase": "Failed", "reason": "Error", "message": "exit 1", "result": None}
    return R.build_results("r1", "s", parse_spec(spec), cases, outcomes, None, None, {"executor": "test"})


def _row(report: str, hardware: str) -> list[str]:
    line = next(ln for ln in report.splitlines() if ln.startswith("| SFT Full") and f"1x{hardware}" in ln)
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_pct_of_floor_from_the_pools_ceilings():
    doc = results(step_s=0.024)
    case = next(c for c in doc["cases"] if c["pool"] == "gpu" and c["type"] == "sft-full")
    assert case["ceilings"]["gemm_tflops"] == GEMM_TF and case["ceilings"]["attention_tflops"] == ATTN_TF
    assert case["floor_s"] == pytest.approx(0.012)
    assert case["metrics"]["pct_of_floor"]["mean"] == pytest.approx(50.0)  # twice the floor
    cal = next(c for c in doc["cases"] if c["type"] == "calibrate" and c["pool"] == "gpu")
    assert cal["metrics"]["gemm_tflops"] == GEMM_TF and cal["metrics"]["tps"] is None  # nothing to judge
    other = next(c for c in doc["cases"] if c["pool"] == "other" and c["type"] == "sft-full")
    assert other["ceilings"] is None and other["metrics"]["pct_of_floor"] is None

    report = render_report(doc)
    head = next(ln for ln in report.splitlines() if ln.startswith("| Type"))
    assert "| MFU (prime-rl) | MFU (done) | % of floor |" in head
    row = _row(report, "H200")
    assert row[7:10] == ["50.0%", "40.0%", "50.0%"]  # nothing flagged: all under the measured ceilings
    assert _row(report, "H100")[9] == "—"  # no calibration on that pool
    assert "## Calibration" in report and "| gpu | 1xH200 | 800 | 80.0% | 500 (cudnn) | 50.0% | – |" in report
    assert "| other | 1xH100 | **Error** |" in report
    assert "‡" not in report


def test_figures_above_the_measured_ceiling_are_flagged_never_plain():
    # MFU (prime-rl) 85% is above the pool's 80% GEMM ceiling; 10 ms a step is faster than the 12 ms floor
    report = render_report(results(step_s=0.010, mfu=85.0, mfu_done=45.0))
    row = _row(report, "H200")
    assert row[7] == "85.0%‡" and row[8] == "45.0%" and row[9] == "120.0%‡"
    assert "‡ above the pool's measured ceiling" in report
    # the other pool's calibration failed: its 85% is flagged by the fixed figure, and the footnote says so
    assert "‡ above 81% of peak on a pool without calibration" in report
    other = _row(report, "H100")
    assert other[7] == "85.0%‡" and other[9] == "—"


def test_without_calibration_the_fixed_figure_stands_in_and_says_so():
    report = render_report(results(mfu=85.0, calibrate=False))
    row = _row(report, "H200")
    assert row[7] == "85.0%‡" and "% of floor" not in report.split("## Calibration")[0].split("| Type")[1][:200]
    assert "‡ above 81% of peak on a pool without calibration (spec.calibrate)" in report
    assert "## Calibration" not in report


def test_a_pool_whose_calibration_fell_is_shown_but_never_a_regression():
    base = from_results(results())
    slow = results(gemm=600.0)  # a throttled GPU: its GEMMs 25% slower
    report = render_report(slow, base)
    assert "GEMM -25.0% :warning:, attention +0.0%" in report
    doc = apply(json.loads(json.dumps(slow)), base)
    cal = [c for c in doc["cases"] if c["type"] == "calibrate"]
    assert all(not c["verdicts"] and not (c["verdict"] or {}).get("state") for c in cal)
    assert doc["summary"]["regressions"] == 0


# --- real processes: the local executor ---------------------------------------------------------------------------


def test_local_run_with_calibration_yields_ceilings_and_pct_of_floor(tmp_path):
    spec = {
        "suite": "cal",
        "calibrate": True,
        "pools": [{"name": "cpu", "hardware": "CPU"}],
        "matrix": {"models": ["tiny-qwen3"], "types": ["sft-full"], "seqLens": [128], "ac": ["none"]},
        "steps": 2,
        "warmupSteps": 1,
        "timeoutSeconds": 300,
    }
    doc = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "cal"}, "spec": spec}
    path = tmp_path / "cal.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "trainbench.cli", "run", str(path), "--local", "--out", str(out), "--device", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    cal, model = res["cases"]
    assert cal["type"] == "calibrate" and cal["phase"] == "Succeeded"
    assert cal["metrics"]["gemm_tflops"] > 0 and cal["metrics"]["attention_tflops"] > 0
    assert json.loads((out / "cases" / f"{cal['id']}.json").read_text())["calibration"]["gemms"]
    assert model["ceilings"]["case"] == cal["id"] and model["done_attention_flops_per_token"] > 0
    pct = model["metrics"]["pct_of_floor"]["mean"]
    assert 0 < pct < 100
    report = (out / "report.md").read_text()
    assert f"{pct:.1f}%" in _row(report, "CPU")[9] and "## Calibration" in report


@pytest.mark.parametrize(
    ("calibration", "says"),
    [
        ({"gemm_tflops": 800.0, "attention_tflops": 500.0}, None),
        ({"gemm_tflops": -1.0, "attention_tflops": 500.0}, "calibration.gemm_tflops: negative value -1.0"),
        ({"gemm_tflops": 800.0, "attention_tflops": "fast"}, "calibration.attention_tflops: str"),
        ({"gemm_tflops": 800.0}, "reports no metric"),
        ([800.0], "calibration is list, not an object"),
    ],
)
def test_a_calibration_result_is_checked_like_any_result(calibration, says):
    problem = R.result_problem({"schema": RESULT_SCHEMA, "status": "ok", "calibration": calibration})
    assert problem == says if says is None else says in problem
