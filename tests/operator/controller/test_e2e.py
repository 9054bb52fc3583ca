"""End to end: kubectl apply -> kopf operator -> Jobs -> real trainer processes -> results and report.

The cluster is tests/operator/kubesim.py (KMock + a Job controller, scheduler and kubelet that run the
pod's command as a local process); the operator is `trainbench operator` in a subprocess; the client is
the real kubectl.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from ophelpers import Kubectl, Operator, wait_for

from trainbench.trainer.contract import STATES

K8S_VERSION = "1.30.0"

# the emulated cluster's nodes carry trainbench.dev/test-pool=a|b (conftest.NODES); a real cluster passes its
# own pools in TRAINBENCH_TEST_POOL_A / _B (JSON: nodeSelector, tolerations, resourceName, image)
SIM_POOL_A = {
    "nodeSelector": {"trainbench.dev/test-pool": "a"},
    "resourceName": "amd.com/gpu",
    "image": "trainer:test",
}
SIM_POOL_B = {
    "nodeSelector": {"trainbench.dev/test-pool": "b"},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "image": "trainer:test",
}


def e2e_manifest(pool_a: dict, pool_b: dict) -> str:
    """4 cases over two pools; pool b's 64Mi memory limit gets its one case OOMKilled (by the fake kubelet here,
    by the kernel on a real cluster)."""
    spec = {
        "suite": "e2e",
        "pools": [
            {"name": "cpu-a", **pool_a, "maxConcurrent": 2, "cpu": "1"},
            {"name": "cpu-b", **pool_b, "memory": "64Mi"},
        ],
        "matrix": {
            "models": ["tiny-qwen3"],
            "types": ["sft-full", "rl-full"],
            "seqLens": [128],
            "pools": ["cpu-a"],
            "include": [
                {"model": "tiny-qwen3", "type": "rl-lora", "pool": "cpu-a"},
                {"model": "tiny-llama", "pool": "cpu-b"},
            ],
        },
        "lora": {"rank": 4, "alpha": 8},
        "steps": 3,
        "warmupSteps": 1,
        "timeoutSeconds": 300,
    }
    return yaml.safe_dump(
        {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "e2e"}, "spec": spec}
    )


TERMINAL = ("Succeeded", "PartiallyFailed", "Failed")


def validate_k8s(obj: dict) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def wait_run_end(kubectl, operator, name: str, timeout: float = 400) -> dict:
    def status():
        return kubectl.get_json("benchmarkrun", name).get("status") or {}

    return wait_for(
        lambda: (s := status()).get("phase") in TERMINAL and s.get("resultsConfigMap") and s,
        timeout,
        f"run {name} to end",
        on_fail=lambda: json.dumps(status(), indent=1)[-4000:] + operator.log()[-6000:],
    )


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_e2e(cluster, kubectl, operator):
    check_e2e(kubectl, operator, SIM_POOL_A, SIM_POOL_B, sim=cluster)


def check_e2e(kubectl, operator, pool_a: dict, pool_b: dict, sim=None):
    """The e2e checks; `sim` is the emulated cluster (None on a real one: no node names, no scrapes from here)."""
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    operator.env = {
        "TRAINBENCH_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook",
        "TRAINBENCH_TRAINER_POD_ANNOTATIONS": json.dumps({"prometheus.io/scrape": "true"}),
    }
    operator.start()
    kubectl.apply(e2e_manifest(pool_a, pool_b))

    seen_progress = {}

    def watch_progress():
        st = kubectl.get_json("benchmarkrun", "e2e").get("status") or {}
        for c in st.get("cases") or []:
            if c.get("phase") == "Running" and c.get("step") is not None:
                seen_progress[c["id"]] = (c["step"], c.get("stepsTotal"), c.get("state"))
        return st.get("phase") in TERMINAL and st.get("resultsConfigMap")

    wait_for(watch_progress, 400, "the run to end", interval=0.3, on_fail=operator.log)
    status = wait_run_end(kubectl, operator, "e2e")

    # --- the Jobs: one per case, named deterministically, with the pool's resources and placement
    jobs = kubectl.get_json("jobs")["items"]
    assert len(jobs) == 4
    by_pool = {}
    for job in jobs:
        validate_k8s(job)
        by_pool.setdefault(job["metadata"]["labels"]["trainbench.dev/pool"], []).append(job)
        spec = job["spec"]
        assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 300
        assert {r["action"] for r in spec["podFailurePolicy"]["rules"]} == {"Ignore", "FailJob"}
        assert job["metadata"]["ownerReferences"][0]["kind"] == "BenchmarkRun"
        pod = spec["template"]["spec"]
        c = pod["containers"][0]
        assert c["command"][:2] == ["torchrun", "--nproc-per-node=1"] and "trainbench.trainer" in c["command"]
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}}.items() <= pod["volumes"][0].items() or pod[
            "volumes"
        ][0]["emptyDir"]["medium"] == "Memory"
    assert len(by_pool["cpu-a"]) == 3 and len(by_pool["cpu-b"]) == 1
    for job in by_pool["cpu-a"]:
        pod = job["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == pool_a["nodeSelector"]
        gpu_a = pool_a.get("resourceName", "nvidia.com/gpu")
        assert pod["containers"][0]["resources"]["limits"] == {gpu_a: "1", "cpu": "1"}
    pod_b = by_pool["cpu-b"][0]["spec"]["template"]["spec"]
    assert pod_b["nodeSelector"] == pool_b["nodeSelector"]
    assert pod_b.get("tolerations") == pool_b.get("tolerations")
    gpu_b = pool_b.get("resourceName", "nvidia.com/gpu")
    assert pod_b["containers"][0]["resources"]["limits"] == {gpu_b: "1", "memory": "64Mi"}
    for pod in kubectl.get_json("pods")["items"]:
        if sim is not None:  # a real kubelet's status has fields newer than this schema version
            validate_k8s(pod)
    if sim is not None:
        assert 1 <= sim.controllers.max_running.get("cpu-a", 0) <= 2  # maxConcurrent held

    # --- status: phase, counts, per-case reasons, progress seen while running
    assert status["phase"] == "PartiallyFailed", status
    assert (status["total"], status["done"], status["succeeded"], status["failed"]) == (4, 4, 3, 1)
    cases = {c["id"]: c for c in status["cases"]}
    failed = [c for c in cases.values() if c["phase"] == "Failed"]
    assert len(failed) == 1 and failed[0]["pool"] == "cpu-b" and failed[0]["reason"] == "OOMKilled"
    ok = [c for c in cases.values() if c["phase"] == "Succeeded"]
    assert all(c["tps"] > 0 and c["node"] for c in ok)
    if sim is not None:  # the operator scrapes pod IPs: only from inside a real cluster
        assert all(c["node"] == "cpu-a-0" for c in ok)
        assert seen_progress, "no progress from the trainer's /metrics reached the status while cases ran"
    # the live scrape (pod IP + the pod's metrics port) reached the status; tiny cases run for about a second,
    # so the state seen may be any of the trainer's states
    assert {state for _step, _total, state in seen_progress.values()} <= set(STATES), seen_progress
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Completed"]["status"] == "True" and conds["Completed"]["observedGeneration"] == 1
    assert conds["Ready"]["status"] == "True" and conds["RegressionDetected"]["status"] == "False"
    assert conds["SpecValid"]["lastTransitionTime"] <= conds["Completed"]["lastTransitionTime"]

    # --- results and report ConfigMaps with measured values
    cm = kubectl.get_json("configmap", "e2e-results")
    validate_k8s(cm)
    results = json.loads(cm["data"]["results.json"])
    assert results["run"] == "e2e" and results["suite"] == "e2e"
    assert len(results["cases"]) == 4
    for case in results["cases"]:
        if case["phase"] == "Succeeded":
            m = case["metrics"]
            assert m["tps"]["mean"] > 0 and m["step_time"]["mean"] > 0 and m["mfu"]["mean"] > 0
            assert m["tps"]["n"] == 3  # three measured steps, the warm-up excluded
            assert case["node"] and case["image"] == pool_a["image"] and case["job"]
            assert case["started_at"] and case["finished_at"]
        else:
            assert case["reason"] == "OOMKilled" and case["model"] == "tiny-llama"
    report = kubectl.get_json("configmap", "e2e-report")
    validate_k8s(report)
    md = report["data"]["report.md"]
    assert "OOMKilled" in md and "tiny" in md.lower()

    # --- kubectl get br shows the printer columns
    out = kubectl("get", "br").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "CASES", "FAILED", "REGRESSIONS", "AGE"]
    assert row.split()[:5] == ["e2e", "PartiallyFailed", "4/4", "1", "0"]

    # --- Events on transitions
    want = {"CaseLaunched", "CaseSucceeded", "OOMKilled", "RunPartiallyFailed", "ResultsWritten"}
    wait_for(  # kopf posts Events in the background
        lambda: want <= {e.get("reason") for e in kubectl.get_json("events")["items"]}, 60, f"Events {want}"
    )

    # --- the operator's own /metrics keeps the results
    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    tps_lines = [line for line in text.splitlines() if line.startswith("trainbench_result_tokens_per_second{")]
    assert len(tps_lines) == 3 and all('run="e2e"' in line for line in tps_lines)
    assert any(
        line.startswith("trainbench_case_failed{") and 'reason="OOMKilled"' in line for line in text.splitlines()
    )
    assert 'trainbench_runs{phase="PartiallyFailed"} 1.0' in text

    # --- the webhook got one message about the failed case; trainer pods carry the configured annotations
    wait_for(lambda: Hook.received, 60, "the webhook (sent on the tick after the final status)")
    time.sleep(2)  # a second message would come on the next tick
    hook.shutdown()
    assert len(Hook.received) == 1 and "OOMKilled" in json.dumps(Hook.received[0])
    assert all(j["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true" for j in jobs)

    # --- deleting the run deletes everything it owns (ownerReferences); the suite's history is no run's: it stays
    kubectl("delete", "benchmarkrun", "e2e", "--wait=false")

    def configmaps():
        return [cm["metadata"]["name"] for cm in kubectl.get_json("configmaps")["items"]]

    wait_for(
        lambda: not kubectl.get_json("jobs")["items"] and configmaps() == ["e2e-history"],
        60,
        "the run's Jobs and ConfigMaps to be garbage-collected",
        on_fail=operator.log,
    )


@pytest.mark.cluster
def test_e2e_real_cluster(tmp_path):
    """The same e2e against the cluster KUBECONFIG points at: TRAINBENCH_TEST_CLUSTER=1, the trainer image and
    two pools in TRAINBENCH_TEST_POOL_A / _B (JSON: nodeSelector, tolerations, resourceName, image). Installs the
    CRD, runs the operator here (out of cluster) in a fresh namespace, deletes the namespace afterwards."""
    if not (os.environ.get("KUBECONFIG") and os.environ.get("TRAINBENCH_TEST_CLUSTER")):
        pytest.skip("no real cluster: set KUBECONFIG and TRAINBENCH_TEST_CLUSTER=1 (and TRAINBENCH_TEST_POOL_A/_B)")
    pool_a = json.loads(os.environ["TRAINBENCH_TEST_POOL_A"])
    pool_b = json.loads(os.environ.get("TRAINBENCH_TEST_POOL_B") or os.environ["TRAINBENCH_TEST_POOL_A"])
    ns = f"trainbench-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = Path(os.environ["KUBECONFIG"])
    admin = Kubectl(kubeconfig, namespace="default")
    admin("apply", "-f", str(Path(__file__).resolve().parents[3] / "manifests" / "crd.yaml"))
    admin("create", "namespace", ns)
    operator = Operator(kubeconfig, tmp_path, namespace=ns)
    try:
        check_e2e(Kubectl(kubeconfig, namespace=ns), operator, pool_a, pool_b)
    finally:
        operator.stop()
        admin("delete", "namespace", ns, "--wait=false", check=False)
