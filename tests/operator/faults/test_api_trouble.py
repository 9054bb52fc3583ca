"""The operator against API trouble that is not an injected error code (issue 19), each with the real
`trainbench operator` (kopf) against the emulated cluster:

- a hung API call (no answer at all: kubesim's `hang` fault) costs one tick, never the run: every call has a
  client-side timeout (controller/client.py, TRAINBENCH_API_TIMEOUT);
- the API server refusing an object the operator derives (a ValidatingAdmissionPolicy's 422, an admission
  webhook's 403 on a case's Job) ends that case Failed with reason CreateRefused, the server's message in the
  case, a CreateRefused condition on the run and a Warning Event, and is not retried; an exceeded quota (403
  "exceeded quota") is a wait, retried;
- a ConfigMap of the name the run writes (`<run>-results`, `<run>-report`) that belongs to another object is
  never overwritten: the run writes its own under another name, says so (condition ConfigMapNotOwned, a
  Warning Event) and finishes as usual.
"""

from __future__ import annotations

import json

import pytest
import urllib3
from kubesim import Cluster, FaultPlan
from ophelpers import NODES, Kubectl, Operator, wait_for

from trainbench.operator import api as A
from trainbench.operator import kube as K
from trainbench.operator.controller import client as C
from trainbench.operator.controller import reconcile
from trainbench.operator.plan import plan

RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: {name}
spec:
  pools:
    - name: a
      nodeSelector: {{trainbench.dev/test-pool: a}}
      image: trainer:test
      maxConcurrent: 3
  matrix:
    models: [tiny-qwen3]
    types: [sft-full]
    seqLens: [{seq_lens}]
  steps: 2
  warmupSteps: 1
  baseline: {{source: none}}
"""


def _result(tps: float) -> str:
    s = {"mean": tps, "std": 1.0, "min": tps - 1, "max": tps + 1, "n": 3}
    metrics = {"tps": s, "mfu": {**s, "mean": 1.5}, "step_time": {**s, "mean": 0.25}}
    return json.dumps({"schema": "trainbench.dev/result/v1", "status": "ok", "error": None, "metrics": metrics})


def _trainer(pod: dict):
    return _result(1000.0), 0, 0.3  # a stand-in trainer: a valid result after 0.3 s


def _jobs(name: str, seq_lens: str) -> dict[int, str]:
    """seq len -> the Job name of that case (kube.job_name)."""
    spec = A.parse_spec(
        {
            "pools": [{"name": "a", "nodeSelector": {"trainbench.dev/test-pool": "a"}, "image": "trainer:test"}],
            "matrix": {
                "models": ["tiny-qwen3"],
                "types": ["sft-full"],
                "seqLens": [int(x) for x in seq_lens.split(",")],
            },
            "steps": 2,
            "warmupSteps": 1,
        }
    )
    return {case.seq_len: K.case_job_name(name, case) for case in plan(spec)}


def _finished(kubectl: Kubectl, name: str):
    def check():
        run = kubectl.get_json("br", name)
        return run if (run.get("status") or {}).get("resultsConfigMap") else None

    return check


def _events(kubectl: Kubectl, reason: str) -> list[dict]:
    return [e for e in kubectl.get_json("events")["items"] if e.get("reason") == reason]


def _apply(kubectl: Kubectl, plan_: FaultPlan, manifest: str) -> None:
    plan_.enabled = False  # the test's own kubectl is not the operator under test
    try:
        kubectl.apply(manifest)
    finally:
        plan_.enabled = True


def test_every_call_has_a_client_side_timeout(tmp_path, monkeypatch):
    faults = FaultPlan(seed=1)
    hung = faults.add("hang", r"/configmaps/hung$", ("GET",))
    with Cluster(tmp_path / "cluster", faults=faults) as c:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        monkeypatch.setenv(C.TIMEOUT_ENV, "1,0.5")  # read at the call: set after the client was made counts too
        api = C.Api()
        assert api.read_configmap("default", "other") is None  # an answered call is unaffected
        with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
            api.read_configmap("default", "hung")
        assert hung.fired == 1  # the client gave up, and did not send the request again by itself
        monkeypatch.setenv(C.TIMEOUT_ENV, "soon")
        with pytest.raises(C.ClientError, match="TRAINBENCH_API_TIMEOUT"):
            C.Api()


def test_a_hung_api_call_does_not_strand_the_run(tmp_path):
    faults = FaultPlan(seed=2)
    name = "hung"
    # one hang on each step of a tick: the run read, a Job create, the Pod list, a status write, the results
    rules = [
        faults.add("hang", rf"/benchmarkruns/{name}$", ("GET",), times=2),
        faults.add("hang", r"/namespaces/default/jobs$", ("POST",), times=1),
        faults.add("hang", r"/namespaces/default/pods$", ("GET",), times=1),
        faults.add("hang", rf"/benchmarkruns/{name}/status$", ("PATCH",), times=1),
        faults.add("hang", r"/namespaces/default/configmaps$", ("POST",), times=1),
    ]
    faults.fake_trainer = _trainer
    with Cluster(tmp_path / "cluster", nodes=NODES, faults=faults) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)
        operator = Operator(cluster.kubeconfig, tmp_path)
        operator.env["TRAINBENCH_API_TIMEOUT"] = "1,2"  # a hang costs 2 s (the default read timeout: 30 s)
        operator.start()
        try:
            _apply(kubectl, faults, RUN.format(name=name, seq_lens="128, 256"))
            # without the timeouts the first hang holds the run's timer for an hour
            run = wait_for(_finished(kubectl, name), 180, "the run to finish", on_fail=operator.log)
        finally:
            operator.stop()
        assert [r.fired for r in rules] == [r.times for r in rules], faults.summary()
        assert [c["phase"] for c in run["status"]["cases"]] == ["Succeeded", "Succeeded"]
        assert all(c["tps"] == 1000.0 for c in run["status"]["cases"])
        jobs = _jobs(name, "128,256")
        assert all(cluster.sim.creations[("jobs", "default", j)] == 1 for j in jobs.values())  # launched once
        assert "timed out" in operator.log()


def test_a_refused_job_ends_its_case_with_the_servers_message(tmp_path):
    name = "refused"
    jobs = _jobs(name, "128,256,512")
    faults = FaultPlan(seed=3)
    policy = (
        f'jobs.batch "{jobs[128]}" is forbidden: ValidatingAdmissionPolicy "gpu-jobs" with binding "gpu-jobs" '
        "denied request: trainer Jobs must set spec.template.spec.priorityClassName"
    )
    webhook = (
        'admission webhook "policy.example.com" denied the request: image trainer:test is not from registry.example.com'
    )
    quota = f'jobs.batch "{jobs[512]}" is forbidden: exceeded quota: gpu, requested: count/jobs.batch=1, used: 4, limited: 4'
    vap = faults.add("error", r"/jobs$", ("POST",), name=jobs[128], status=422, message=policy)
    hook = faults.add("error", r"/jobs$", ("POST",), name=jobs[256], status=403, message=webhook)
    full = faults.add("error", r"/jobs$", ("POST",), name=jobs[512], status=403, message=quota, times=2)
    faults.fake_trainer = _trainer
    with Cluster(tmp_path / "cluster", nodes=NODES, faults=faults) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)
        operator = Operator(cluster.kubeconfig, tmp_path).start()
        try:
            _apply(kubectl, faults, RUN.format(name=name, seq_lens="128, 256, 512"))
            run = wait_for(_finished(kubectl, name), 120, "the run to finish", on_fail=operator.log)
            wait_for(lambda: len(_events(kubectl, "CreateRefused")) >= 2, 30, "the Events")
            events = kubectl.get_json("events")["items"]
            cm = kubectl.get_json("configmap", run["status"]["resultsConfigMap"])
            results = json.loads(cm["data"]["results.json"])
        finally:
            operator.stop()
    status = run["status"]
    by_len = {c["seqLen"]: c for c in status["cases"]}
    assert status["phase"] == "PartiallyFailed"
    for seq_len, code, text in ((128, 422, policy), (256, 403, webhook)):
        case = by_len[seq_len]
        assert (case["phase"], case["reason"]) == ("Failed", reconcile.CREATE_REFUSED)
        assert f"the API server refused Job {jobs[seq_len]} ({code}" in case["message"] and text in case["message"]
        assert cluster.sim.creations[("jobs", "default", jobs[seq_len])] == 0
    assert (vap.fired, hook.fired) == (1, 1)  # said once and ended: never retried
    assert by_len[512]["phase"] == "Succeeded" and full.fired == 2  # an exceeded quota waits, then runs
    cond = next(c for c in status["conditions"] if c["type"] == "CreateRefused")
    assert cond["status"] == "True" and jobs[128] in cond["message"] and jobs[256] in cond["message"]
    refused = [e for e in events if e.get("reason") == "CreateRefused"]
    assert {e["type"] for e in refused} == {"Warning"} and len(refused) == 2
    assert any("ValidatingAdmissionPolicy" in e["message"] for e in refused)
    reasons = {c["config"]["seq_len"]: c["reason"] for c in results["cases"]}
    assert reasons == {128: "CreateRefused", 256: "CreateRefused", 512: None}


def test_a_configmap_of_another_owner_is_never_overwritten(tmp_path):
    name = "foreign"
    faults = FaultPlan(seed=4)
    faults.fake_trainer = _trainer
    users = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-results"}, "data": {"mine": "1"}}
    keeper = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keeper"}, "data": {}}
    with Cluster(tmp_path / "cluster", nodes=NODES, faults=faults) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)
        kubectl.apply(json.dumps(users))
        kubectl.apply(json.dumps(keeper))  # an owner that exists (the garbage collector takes orphans)
        uid = kubectl.get_json("configmap", "keeper")["metadata"]["uid"]
        owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": uid}
        other = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-report", "ownerReferences": [owner]},
            "data": {"report.md": "# another report\n"},
        }
        kubectl.apply(json.dumps(other))
        operator = Operator(cluster.kubeconfig, tmp_path).start()
        try:
            kubectl.apply(RUN.format(name=name, seq_lens="128"))
            run = wait_for(_finished(kubectl, name), 120, "the run to finish", on_fail=operator.log)
            events = wait_for(lambda: _events(kubectl, "ConfigMapNotOwned"), 30, "the Event")
            mine_results = kubectl.get_json("configmap", f"{name}-results")
            mine_report = kubectl.get_json("configmap", f"{name}-report")
            status = run["status"]
            uid = run["metadata"]["uid"]
            results = kubectl.get_json("configmap", status["resultsConfigMap"])
            report = kubectl.get_json("configmap", status["reportConfigMap"])
        finally:
            operator.stop()
    # the others' ConfigMaps are as they were
    assert mine_results["data"] == {"mine": "1"} and not mine_results["metadata"].get("ownerReferences")
    assert mine_report["data"] == other["data"] and mine_report["metadata"]["ownerReferences"][0]["name"] == "keeper"
    # the run finished as usual, its own ConfigMaps under names no other run derives, owned by it
    assert status["phase"] == "Succeeded"
    assert status["resultsConfigMap"] == reconcile.own_configmap_name(f"{name}-results", uid)
    assert status["reportConfigMap"] == reconcile.own_configmap_name(f"{name}-report", uid)
    for cm in (results, report):
        assert cm["metadata"]["ownerReferences"][0]["uid"] == uid
    doc = json.loads(results["data"]["results.json"])
    assert [c["phase"] for c in doc["cases"]] == ["Succeeded"] and "report.md" in report["data"]
    cond = next(c for c in status["conditions"] if c["type"] == "ConfigMapNotOwned")
    assert cond["status"] == "True"
    assert f"configmap/{name}-results exists and belongs to no BenchmarkRun" in cond["message"]
    assert f"configmap/{name}-report exists and belongs to ConfigMap/keeper" in cond["message"]
    assert len(events) == 2 and {e["type"] for e in events} == {"Warning"}
