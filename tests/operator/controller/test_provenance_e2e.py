"""Issue 15 end to end in the emulated cluster: pods report an imageID (the kubelet pins the image by digest) and
the image carries TRAINBENCH_IMAGE_* in its config (as images/*/Dockerfile bake them): results.json and the
report name the digest, the commit and a repro command per case, and `trainbench report` of the run's results
is the report the operator wrote. The chart's trainerPods defaults reach the Jobs (imagePullSecrets). Cancel:
`trainbench cancel NAME` stops the running case, deletes its Job and writes the results of what finished."""

from __future__ import annotations

import json
import re

import yaml
from ophelpers import wait_for

from trainbench.cli import main as cli

REVISION = "3f2c1e0d9b8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e"
CREATED = "2026-12-01T00:04:42Z"
POOL = {"name": "cpu-a", "nodeSelector": {"trainbench.dev/test-pool": "a"}, "image": "trainer:test", "cpu": "1"}


def manifest(name: str, **spec) -> str:
    body = {"pools": [POOL], "matrix": {"models": ["tiny-qwen3"], "seqLens": [64]}, "steps": 2, "warmupSteps": 0}
    body.update(spec)
    return yaml.safe_dump(
        {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": name}, "spec": body}
    )


def test_results_and_report_say_what_ran_and_cancel_keeps_what_finished(
    cluster, kubectl, operator, monkeypatch, capsys
):
    cluster.controllers.kubelet.images["trainer:test"] = {
        "env": {"TRAINBENCH_IMAGE_REVISION": REVISION, "TRAINBENCH_IMAGE_CREATED": CREATED}
    }
    operator.env = {"TRAINBENCH_TRAINER_POD_DEFAULTS": json.dumps({"imagePullSecrets": [{"name": "regcred"}]})}
    operator.start()
    kubectl.apply(manifest("prov", podTemplate={"env": [{"name": "NCCL_DEBUG", "value": "WARN"}]}))

    def status(name):
        return kubectl.get_json("br", name).get("status") or {}

    st = wait_for(lambda: (s := status("prov")).get("resultsConfigMap") and s, 240, "prov", on_fail=operator.log)
    assert st["phase"] == "Succeeded", json.dumps(st)[-2000:]
    job = kubectl.get_json("jobs")["items"][0]
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]  # the chart's trainerPods, through the operator
    assert {"name": "NCCL_DEBUG", "value": "WARN"} in pod_spec["containers"][0]["env"]

    doc = json.loads(kubectl.get_json("configmap", "prov-results")["data"]["results.json"])
    report = kubectl.get_json("configmap", "prov-report")["data"]["report.md"]
    pod = kubectl.get_json("pods")["items"][0]
    image_id = pod["status"]["containerStatuses"][0]["imageID"]
    digest = re.search(r"sha256:[0-9a-f]{64}", image_id).group(0)
    case = doc["cases"][0]
    assert doc["environment"]["commit"] == REVISION and doc["environment"]["image_created"] == CREATED
    assert doc["environment"]["image_digest"] == digest and doc["environment"]["image"] == f"trainer@{digest}"
    assert case["environment"]["image_digest"] == digest and case["environment"]["image_revision"] == REVISION
    assert case["environment"]["node"] == case["node"] == pod["spec"]["nodeName"]
    assert case["repro"].startswith(f"podman run --rm --device nvidia.com/gpu=all --ipc host trainer@{digest} torchrun")
    assert f"--case {case['id']}" in case["repro"]
    assert f"**Commit:** `{REVISION}`" in report and f"**Docker Image:** `trainer@{digest}`" in report
    assert "Commit: unknown" not in report and f"**Image Built:** {CREATED}" in report
    assert "<details><summary>Reproduce a case</summary>" in report and case["repro"] in report

    # `trainbench report` on the run's results is the report the operator wrote
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    capsys.readouterr()
    assert cli(["report", "configmap/prov-results"]) == 0
    assert capsys.readouterr().out == report

    # cancel: a long case is stopped, its Job deleted, the results say Cancelled
    kubectl.apply(manifest("long", steps=10000, matrix={"models": ["tiny-qwen3"], "seqLens": [64, 128]}))
    wait_for(lambda: status("long").get("running") == 1, 120, "long to run", on_fail=operator.log)
    assert cli(["cancel", "long"]) == 0
    st = wait_for(lambda: (s := status("long")).get("resultsConfigMap") and s, 120, "cancel", on_fail=operator.log)
    assert st["phase"] == "Cancelled" and [c["phase"] for c in st["cases"]] == ["Cancelled", "Cancelled"]
    doc = json.loads(kubectl.get_json("configmap", "long-results")["data"]["results.json"])
    assert [c["phase"] for c in doc["cases"]] == ["Cancelled", "Cancelled"]
    assert "cancelled (spec.cancel)" in kubectl.get_json("configmap", "long-report")["data"]["report.md"]
    long_jobs = lambda: [j for j in kubectl.get_json("jobs")["items"] if j["metadata"]["name"].startswith("long")]  # noqa: E731
    wait_for(lambda: not long_jobs(), 60, "the cancelled Job to go", on_fail=operator.log)


def test_a_suspended_run_reports_what_finished_and_finishes_later(cluster, kubectl, operator):
    operator.start()
    kubectl.apply(manifest("pause", steps=20, matrix={"models": ["tiny-qwen3"], "seqLens": [64, 128]}))

    def status():
        return kubectl.get_json("br", "pause").get("status") or {}

    wait_for(lambda: status().get("running") == 1, 120, "the first case to run", on_fail=operator.log)
    kubectl("patch", "br", "pause", "--type=merge", "-p", json.dumps({"spec": {"suspend": True}}))
    st = wait_for(lambda: (s := status()).get("phase") == "Suspended" and s, 180, "Suspended", on_fail=operator.log)
    assert [c["phase"] for c in st["cases"]] == ["Succeeded", "Pending"] and not st.get("resultsConfigMap")
    report = wait_for(lambda: kubectl.get_json("configmap", "pause-report"), 60, "the partial report")["data"]
    partial = json.loads(report["partial-results.json"])
    assert [c["phase"] for c in partial["cases"]] == ["Succeeded", "Pending"]
    assert "1 not finished" in report["report.md"]
    assert kubectl("get", "configmap", "pause-results", check=False).returncode != 0  # not the final results

    kubectl("patch", "br", "pause", "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    st = wait_for(lambda: (s := status()).get("resultsConfigMap") and s, 240, "the run to end", on_fail=operator.log)
    assert st["phase"] == "Succeeded"
    final = json.loads(kubectl.get_json("configmap", "pause-results")["data"]["results.json"])
    assert [c["phase"] for c in final["cases"]] == ["Succeeded", "Succeeded"]
    assert "partial-results.json" not in kubectl.get_json("configmap", "pause-report")["data"]  # the final report
