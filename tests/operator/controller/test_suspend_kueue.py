"""suspend stops launching (and resumes); queueName creates Jobs suspended with the Kueue label, and the case
runs once "Kueue" (here: kubectl) admits the Job by unsuspending it. The operator watches cluster-wide here
(--all-namespaces) and the run lives in its own namespace; its liveness endpoint answers."""

from __future__ import annotations

import json
import urllib.request

from kubesim import free_port
from ophelpers import Kubectl, wait_for


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except OSError:
        return None


RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: queued
spec:
  pools: [{name: cpu-a, nodeSelector: {trainbench.dev/test-pool: a}, image: trainer:test}]
  matrix: {models: [tiny-qwen3], seqLens: [128]}
  steps: 2
  suspend: true
  queueName: team-a
"""


def test_suspend_and_kueue(cluster, operator):
    kubectl = Kubectl(cluster.kubeconfig, namespace="team-a")
    operator.all_namespaces = True
    operator.liveness_port = free_port()
    operator.start()
    health = wait_for(
        lambda: _get(f"http://127.0.0.1:{operator.liveness_port}/healthz"), 60, "/healthz", on_fail=operator.log
    )
    assert health == 200
    kubectl.apply(RUN)

    def status():
        return kubectl.get_json("br", "queued").get("status") or {}

    wait_for(lambda: status().get("phase") == "Suspended", 60, "phase Suspended", on_fail=operator.log)
    assert kubectl.get_json("jobs")["items"] == []

    kubectl("patch", "br", "queued", "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    jobs = wait_for(lambda: kubectl.get_json("jobs")["items"], 60, "the Job", on_fail=operator.log)
    job = jobs[0]
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    st = wait_for(
        lambda: (s := status()).get("observedGeneration") == 2 and "Kueue" in s["cases"][0].get("message", "") and s,
        60,
        "the case to wait for Kueue",
    )
    assert st["cases"][0]["phase"] == "Pending" and st["phase"] == "Running"
    assert kubectl.get_json("pods")["items"] == []  # a suspended Job has no pods

    kubectl("patch", "job", job["metadata"]["name"], "--type=merge", "-p", '{"spec": {"suspend": false}}')
    final = wait_for(
        lambda: (s := status()).get("resultsConfigMap") and s, 180, "the admitted case to finish", on_fail=operator.log
    )
    assert final["phase"] == "Succeeded" and final["cases"][0]["tps"] > 0
    assert kubectl.get_json("configmap", "queued-report")["metadata"]["namespace"] == "team-a"
