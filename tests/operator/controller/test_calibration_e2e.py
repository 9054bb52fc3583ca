"""spec.calibrate on the cluster path: the calibration case is a Job like any other (its pod runs the real
trainer's `--type calibrate` on the emulated node), the operator collects its ceilings into the results ConfigMap
and the report shows the model case's "% of floor"."""

from __future__ import annotations

import json

from ophelpers import wait_for

RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: calibrated
spec:
  suite: calibrated
  calibrate: true
  pools:
    - name: cpu-a
      gpusPerNode: 2
      nodeSelector: {trainbench.dev/test-pool: a}
      image: trainer:test
      hardware: CPU
  matrix:
    models: [tiny-qwen3]
    types: [sft-full]
    seqLens: [128]
    ac: [none]
  steps: 2
  warmupSteps: 1
"""


def test_calibration_case_runs_as_a_job_and_the_report_shows_pct_of_floor(cluster, kubectl, operator):
    operator.env["TRAINBENCH_MAX_OTHER_CPU"] = "64"  # about the flow, not the environment's health
    operator.start()
    kubectl.apply(RUN)
    status = wait_for(
        lambda: (s := kubectl.get_json("br", "calibrated").get("status") or {}).get("resultsConfigMap") and s,
        300,
        "the calibrated run to end",
        on_fail=operator.log,
    )
    assert status["phase"] == "Succeeded", json.dumps(status.get("cases"), indent=1)[:3000]
    assert [c["type"] for c in status["cases"]] == ["calibrate", "sft-full"]

    jobs = {j["metadata"]["labels"].get("trainbench.dev/case", j["metadata"]["name"]): j
            for j in kubectl.get_json("jobs")["items"]}  # fmt: skip
    assert len(jobs) == 2
    cal_job = next(j for j in jobs.values() if "--type" in (args := j["spec"]["template"]["spec"]["containers"][0]
                   .get("args", []) + j["spec"]["template"]["spec"]["containers"][0].get("command", []))
                   and args[args.index("--type") + 1] == "calibrate")  # fmt: skip
    limits = cal_job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(next(v for k, v in limits.items() if k.endswith("/gpu"))) == "1"  # one GPU of the 2-GPU pool

    results = json.loads(kubectl.get_json("configmap", "calibrated-results")["data"]["results.json"])
    cal, model = results["cases"]
    assert cal["type"] == "calibrate" and cal["phase"] == "Succeeded"
    assert cal["metrics"]["gemm_tflops"] > 0 and cal["metrics"]["attention_tflops"] > 0
    assert model["ceilings"]["case"] == cal["id"] and 0 < model["metrics"]["pct_of_floor"]["mean"] < 100
    assert results["summary"]["regressions"] == 0

    report = kubectl.get_json("configmap", "calibrated-report")["data"]["report.md"]
    head = next(ln for ln in report.splitlines() if ln.startswith("| Type"))
    assert "| MFU (done) | % of floor |" in head and "## Calibration" in report
