"""A busy cluster is not a broken one (issue 15): a pod that no node can ever run fails at once as Unschedulable
with the reason (selector matches no node, a resource no node offers, a request above every node's allocatable,
untolerated taints); a pod that fits a node that is busy waits as Pending/WaitingForCapacity (up to the case's
timeout, the Job's deadline) instead of failing after the grace period. Without the nodes (the operator may not
list them) the grace period decides, as before."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import yaml
from kubesim import Cluster
from ophelpers import Kubectl, Operator, wait_for

from trainbench.operator.controller import failures

NOW = datetime(2026, 2, 7, 3, 0, tzinfo=timezone.utc)
GPU = "example.com/gpu"


def node(name: str, labels: dict, allocatable: dict | None = None, taints: list | None = None) -> dict:
    n = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": {}}
    if taints:
        n["spec"]["taints"] = taints
    if allocatable:
        n["status"] = {"allocatable": allocatable, "capacity": allocatable}
    return n


NODES = [
    node("gpu-0", {"pool": "g"}, {GPU: "1", "cpu": "8", "memory": "16Gi", "pods": "110"}),
    node("gpu-1", {"pool": "g"}, {GPU: "1", "cpu": "8", "memory": "16Gi", "pods": "110"}),
    node("tainted", {"pool": "t"}, {GPU: "8"}, taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
]


def pod(selector: dict, limits: dict, tolerations: list | None = None, affinity: dict | None = None) -> dict:
    spec = {"nodeSelector": selector, "containers": [{"name": "trainer", "resources": {"limits": limits}}]}
    if tolerations:
        spec["tolerations"] = tolerations
    if affinity:
        spec["affinity"] = affinity
    return {
        "metadata": {"name": "p", "creationTimestamp": NOW.isoformat()},
        "spec": spec,
        "status": {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
            ],
        },
    }


def test_never_fits_names_the_reason():
    assert failures.never_fits(pod({"pool": "g"}, {GPU: "1", "cpu": "2"}), NODES) is None  # fits gpu-0 or gpu-1
    assert "has the labels pool=h" in failures.never_fits(pod({"pool": "h"}, {GPU: "1"}), NODES)
    assert "offers other.com/gpu" in failures.never_fits(pod({"pool": "g"}, {"other.com/gpu": "1"}), NODES)
    assert "requests example.com/gpu 2" in failures.never_fits(pod({"pool": "g"}, {GPU: "2"}), NODES)
    assert "requests memory" in failures.never_fits(pod({"pool": "g"}, {GPU: "1", "memory": "32Gi"}), NODES)
    assert "dedicated:NoSchedule" in failures.never_fits(pod({"pool": "t"}, {GPU: "1"}), NODES)
    tolerate = [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
    assert failures.never_fits(pod({"pool": "t"}, {GPU: "1"}, tolerate), NODES) is None
    away = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "NotIn", "values": ["g"]}]}
    ]}}}  # fmt: skip
    assert "node affinity" in failures.never_fits(pod({"pool": "g"}, {GPU: "1"}, affinity=away), NODES)
    assert failures.never_fits(pod({"pool": "h"}, {GPU: "1"}), None) is None  # nodes not known: cannot say


def test_busy_waits_broken_fails_at_once_unknown_nodes_keep_the_grace():
    job = {"metadata": {"name": "j"}, "spec": {}, "status": {}}
    old = pod({"pool": "g"}, {GPU: "1"})
    old["status"]["conditions"][0]["lastTransitionTime"] = (NOW - timedelta(hours=1)).isoformat()
    v = failures.classify(job, [old], now=NOW, nodes=NODES)  # an hour: busy, so it keeps waiting
    assert (v.phase, v.reason, v.terminal) == ("Pending", failures.WAITING_FOR_CAPACITY, False)
    v = failures.classify(job, [pod({"pool": "g"}, {GPU: "4"})], now=NOW, nodes=NODES)  # at once
    assert (v.phase, v.reason, v.stop_job) == ("Failed", "Unschedulable", True) and "allocatable (1)" in v.message
    assert failures.classify(job, [old], now=NOW, nodes=None).reason == "Unschedulable"  # forbidden: grace


def test_busy_cluster_in_the_emulator(tmp_path):
    """Two 1-GPU nodes, three cases of one GPU each at once (maxConcurrent 3): one waits for a node while the
    operator's grace period (2 s here) passes many times, then runs; a 2-GPU case fails at once."""
    spec = {
        "pools": [
            {"name": "g", "nodeSelector": {"pool": "g"}, "resourceName": GPU, "image": "trainer:test", "cpu": "1"},
            {"name": "g2", "nodeSelector": {"pool": "g"}, "resourceName": GPU, "image": "trainer:test"},
        ],
        "matrix": {"models": ["tiny-qwen3"], "seqLens": [64, 96, 128], "pools": ["g"]},
        "steps": 40,
        "warmupSteps": 0,
        "timeoutSeconds": 600,
    }
    spec["pools"][0]["maxConcurrent"] = 3
    spec["pools"][1]["gpusPerNode"] = 2
    spec["matrix"]["include"] = [{"model": "tiny-qwen3", "seqLen": 64, "pool": "g2"}]
    manifest = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "busy"}}
    with Cluster(tmp_path / "cluster", nodes=NODES[:2]) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)
        operator = Operator(cluster.kubeconfig, tmp_path)
        try:
            operator.start()
            kubectl.apply(yaml.safe_dump({**manifest, "spec": spec}))

            def cases():
                return (kubectl.get_json("br", "busy").get("status") or {}).get("cases") or []

            waiting = wait_for(
                lambda: [c for c in cases() if c.get("reason") == failures.WAITING_FOR_CAPACITY],
                120,
                "a case waiting for capacity",
                on_fail=operator.log,
            )
            assert waiting[0]["phase"] == "Pending" and "Insufficient example.com/gpu" in waiting[0]["message"]
            status = wait_for(
                lambda: (s := kubectl.get_json("br", "busy").get("status") or {}).get("resultsConfigMap") and s,
                400,
                "the run to end",
                on_fail=lambda: json.dumps(cases(), indent=1)[-3000:] + operator.log(),
            )
        finally:
            operator.stop()
    by_pool = {}
    for c in status["cases"]:
        by_pool.setdefault(c["pool"], []).append(c)
    assert [c["phase"] for c in by_pool["g"]] == ["Succeeded"] * 3, by_pool["g"]
    (big,) = by_pool["g2"]
    assert (big["phase"], big["reason"]) == ("Failed", "Unschedulable")
    assert "requests example.com/gpu 2, more than any matching node has allocatable (1)" in big["message"]
