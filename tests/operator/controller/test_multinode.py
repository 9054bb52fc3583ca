"""A case on a pool of two nodes: an Indexed Job of two pods behind a headless Service whose torchrun
processes rendezvous for real through Kubeflow Trainer's PET_* environment (the fake kubelet maps the
Service's DNS name of index 0 to 127.0.0.1 and runs one CPU process per pod), and the result counts both."""

from __future__ import annotations

import json

import kubernetes_validate
from ophelpers import wait_for

RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: two-nodes
spec:
  pools:
    - name: cpu-a
      nodes: 2
      gpusPerNode: 1
      nodeSelector: {trainbench.dev/test-pool: a}
      image: trainer:test
  matrix:
    models: [tiny-qwen3]
    types: [sft-full]
    seqLens: [128]
  steps: 2
  warmupSteps: 1
"""


def test_two_node_case_rendezvous_for_real(cluster, kubectl, operator):
    operator.start()
    kubectl.apply(RUN)
    status = wait_for(
        lambda: (s := kubectl.get_json("br", "two-nodes").get("status") or {}).get("resultsConfigMap") and s,
        240,
        "the two-node run to end",
        on_fail=operator.log,
    )
    assert status["phase"] == "Succeeded", status["cases"]

    (job,) = kubectl.get_json("jobs")["items"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    svc = kubectl.get_json("service", job["metadata"]["name"])
    assert svc["spec"]["clusterIP"] == "None"
    pods = kubectl.get_json("pods")["items"]
    indices = sorted(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indices == ["0", "1"] and all(p["status"]["phase"] == "Succeeded" for p in pods)
    for obj in (job, svc, *pods):
        kubernetes_validate.validate(obj, "1.30.0", strict=False)

    results = json.loads(kubectl.get_json("configmap", "two-nodes-results")["data"]["results.json"])
    (case,) = results["cases"]
    assert case["phase"] == "Succeeded" and case["gpus"] == 2
    # both pods' processes joined one process group: the trainer measured a world of two
    assert case["world_size"] == 2 and case["metrics"]["tps"]["mean"] > 0
