"""Baselines in the cluster: a run of a suite is compared with the previous run of the same suite, or with a
pinned results ConfigMap; a pinned baseline that is much faster than what this machine measures makes every
metric regress: RegressionDetected, the REGRESSIONS column, the report, the operator's regression gauges."""

from __future__ import annotations

import json
import urllib.request

import yaml
from ophelpers import run_ended, run_results

SPEC = {
    "suite": "reg",
    "pools": [{"name": "cpu-a", "nodeSelector": {"trainbench.dev/test-pool": "a"}, "image": "trainer:test"}],
    "matrix": {"models": ["tiny-qwen3"], "seqLens": [128]},
    "steps": 2,
}


def manifest(name: str, **spec) -> str:
    doc = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": name}}
    return yaml.safe_dump({**doc, "spec": {**SPEC, **spec}})


def test_previous_and_pinned_baselines(cluster, kubectl, operator):
    # about baselines and confirmation, not the environment: the operator, the emulated cluster and this test
    # share the machine with the trainer pods, so host load may not taint the cases here
    operator.env["TRAINBENCH_MAX_OTHER_CPU"] = "64"
    operator.start()

    def ended(name):
        return run_ended(kubectl, operator, name, 180)

    def results(name):
        return run_results(kubectl, name)

    kubectl.apply(manifest("reg-1"))
    assert ended("reg-1")["phase"] == "Succeeded"
    first = results("reg-1")
    assert first["baseline"] is None or first["baseline"]["matched"] == 0

    # a pinned baseline a hundred times faster than this machine (a loaded machine swings by factors)
    pinned = json.loads(json.dumps(first))
    pinned["run"] = "golden"
    for case in pinned["cases"]:
        m = case["metrics"]
        for key in ("tps", "mfu"):
            m[key] = {k: (v * 100 if k != "n" and v is not None else v) for k, v in m[key].items()}
        m["step_time"] = {k: (v / 100 if k != "n" and v is not None else v) for k, v in m["step_time"].items()}
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "golden"},
        "data": {"results.json": json.dumps(pinned)},
    }
    kubectl.apply(json.dumps(cm))

    kubectl.apply(manifest("reg-2"))  # baseline: the previous run of suite "reg"
    kubectl.apply(manifest("reg-3", baseline={"source": "configMap", "configMap": "golden"}))
    second, third = ended("reg-2"), ended("reg-3")

    doc2 = results("reg-2")
    assert doc2["baseline"]["matched"] == 1 and "reg-1" in doc2["baseline"]["description"]
    assert doc2["cases"][0]["baseline"]["run"] == "reg-1"

    doc3 = results("reg-3")
    verdicts = doc3["cases"][0]["verdicts"]
    regressed = {m for m, v in verdicts.items() if v["status"] == "regression"}
    assert regressed >= {"tps", "mfu", "step_time"}, doc3["cases"][0]["verdict"]
    conds = {c["type"]: c for c in third["conditions"]}
    # regressions count cases (one case regressed on TPS, MFU and step time: one verdict, one regression)
    assert conds["RegressionDetected"]["status"] == "True" and third["regressions"] == 1
    assert doc3["summary"]["regressions"] == 1 and doc3["cases"][0]["verdict"]["state"] == "confirmed"
    # suspected once every case had ended, re-run twice as Jobs of their own (spec.confirm), then Confirmed
    assert [r["confirm"] for r in doc3["cases"][0]["repeats"]] == [False, True, True]
    assert third["confirm"] == {doc3["cases"][0]["id"]: 2} and third["progress"] == "3/3"
    events = kubectl("get", "events", "-o", "json").stdout
    assert "RegressionSuspected" in events and "RegressionConfirmed" in events
    assert third["phase"] == "Succeeded"  # a regression is a finding, not a failed case
    row = next(line for line in kubectl("get", "br").stdout.splitlines() if line.startswith("reg-3"))
    assert row.split()[4] == str(third["regressions"])
    assert ":warning:" in kubectl.get_json("configmap", "reg-3-report")["data"]["report.md"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    assert any(line.startswith("trainbench_result_regression{") and 'run="reg-3"' in line for line in text.splitlines())
    assert second["phase"] == "Succeeded"
