"""spec.multiNode.engine JobSet: a multi-node case as one jobset.x-k8s.io/v1alpha2 JobSet.

Pure parts: the JobSet validates against JobSet's own schema (the models `kubeflow-trainer-api` generates from
its OpenAPI, plus a check of unknown keys, `jobset_schema.py`) and its Job template against Kubernetes' batch/v1
schema; names fit JobSet's DNS rules; reconcile creates a JobSet instead of a Job and Service, follows its child
Job, stops it, and fails the case with JobSetUnavailable when the cluster lacks the API.

Against the emulated cluster: with the JobSet API served, a 2-node case under Kueue is created as one suspended
JobSet with the queue label, an operator restart adopts it, and once admitted the two pods of its child Job
rendezvous for real at JobSet's DNS name of pod 0. Without the API, that case fails with JobSetUnavailable while
a one-node case of the same run succeeds; a malformed engine is refused at apply."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jobset_schema import jobset_errors
from kubesim import Cluster, SchemaValidator
from ophelpers import NODES, Kubectl, Operator, wait_for

from trainbench.operator import api
from trainbench.operator import kube as K
from trainbench.operator.controller import failures, reconcile
from trainbench.operator.plan import plan
from trainbench.trainer import contract as C

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
NOW = datetime(2026, 2, 7, 3, 0, tzinfo=timezone.utc)
RUN = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "nightly-20260207", "namespace": "bench", "uid": "u-1", "generation": 1},
}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _job(cond=None, reason=None):
    status = {"conditions": [{"type": cond, "status": "True", "reason": reason}]} if cond else {}
    return {"spec": {}, "status": status}


def _pod(phase, terminated=None, conditions=None):
    state = {"terminated": terminated} if terminated else {"running": {}}
    status = {
        "phase": phase,
        "conditions": conditions or [],
        "containerStatuses": [{"name": "trainer", "state": state}],
    }
    return {"metadata": {"name": "p", "creationTimestamp": "2026-02-07T01:00:00Z"}, "spec": {}, "status": status}


def _spec(engine="JobSet", nodes=2, **extra):
    return api.parse_spec(
        {
            "pools": [
                {"name": "h100x2", "gpusPerNode": 8, "nodes": nodes, "memory": "512Gi", "cpu": "64"},
                {"name": "h100", "gpusPerNode": 8},
            ],
            "matrix": {"models": ["qwen3-0.6b"], "seqLens": [16384]},
            "multiNode": {"engine": engine},
            "timeoutSeconds": 1200,
            **extra,
        }
    )


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container["env"]}


# --- the JobSet object -------------------------------------------------------------------------------------------


def test_jobset_validates_against_jobset_and_kubernetes_schemas():
    spec = _spec()
    case = next(c for c in plan(spec) if c.nodes == 2)
    pool = spec.pools[0]
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    kw = dict(
        pod=K.PodSettings(node_selector={"gpu": "h100"}, tolerations=tolerations, cpu=pool.cpu, memory=pool.memory)
    )
    js = K.build_jobset(RUN, case, namespace="bench", queue_name="gpu-queue", suite="nightly", **kw)
    assert jobset_errors(js) == []
    name = js["metadata"]["name"]
    assert name == K.jobset_name("nightly-20260207", case.id) == K.jobset_name("nightly-20260207", case.id)
    assert js["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    # Kueue admits the JobSet as one workload: the queue label and suspend are on the JobSet, not its Job
    assert js["spec"]["suspend"] is True and js["metadata"]["labels"][K.L_KUEUE_QUEUE] == "gpu-queue"
    (rjob,) = js["spec"]["replicatedJobs"]
    assert rjob["name"] == K.JOBSET_REPLICATED_JOB and rjob["replicas"] == 1
    assert K.L_KUEUE_QUEUE not in rjob["template"]["metadata"]["labels"] and "suspend" not in rjob["template"]["spec"]
    assert js["spec"]["network"]["enableDNSHostnames"] is True and "subdomain" not in js["spec"]["network"]
    assert js["spec"]["failurePolicy"] == {"maxRestarts": 0} and js["spec"]["successPolicy"] == {"operator": "All"}
    # the replicated Job is the Indexed Job the Job engine makes, but for the rendezvous address and subdomain
    child = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**rjob["template"]["metadata"], "name": K.jobset_job_name(name), "namespace": "bench"},
        "spec": rjob["template"]["spec"],
    }
    kubernetes_validate.validate(child, "1.30.0", strict=True)
    job = K.build_job(RUN, case, namespace="bench", suite="nightly", **kw)
    jspec = rjob["template"]["spec"]
    assert jspec["completionMode"] == "Indexed" and jspec["completions"] == jspec["parallelism"] == 2
    js_pod, job_pod = copy.deepcopy(jspec["template"]), copy.deepcopy(job["spec"]["template"])
    assert job_pod["spec"].pop("subdomain") == job["metadata"]["name"]  # JobSet sets the subdomain itself
    js_env, job_env = _env(js_pod["spec"]["containers"][0]), _env(job_pod["spec"]["containers"][0])
    assert js_env.pop("PET_MASTER_ADDR")["value"] == f"{name}-node-0-0.{name}"  # JobSet's pod hostname scheme
    assert job_env.pop("PET_MASTER_ADDR")["value"] == f"{job['metadata']['name']}-0.{job['metadata']['name']}"
    assert js_env == job_env and js_pod["metadata"] == job_pod["metadata"]
    for pod in (js_pod, job_pod):
        del pod["spec"]["containers"][0]["env"]
    assert js_pod == job_pod
    assert rjob["template"]["metadata"]["labels"] == job["metadata"]["labels"]  # the child Job is the run's Job
    # one-node cases are never JobSets
    one = next(c for c in plan(spec) if c.nodes == 1)
    assert K.engine(one, "JobSet") == "Job" and K.engine(case, "Job") == "Job" and K.engine(case, "JobSet") == "JobSet"
    with pytest.raises(ValueError):
        K.build_jobset(RUN, one, namespace="bench")


def test_jobset_schema_check_catches_mistakes():
    spec = _spec()
    js = K.build_jobset(RUN, next(c for c in plan(spec) if c.nodes == 2), namespace="bench")
    rjob_path = ("spec", "replicatedJobs", 0)
    container = (*rjob_path, "template", "spec", "template", "spec", "containers", 0)
    for path, value in [
        (("spec", "network", "enableDnsHostnames"), True),  # misspelt: an unknown field
        ((*container, "bogus"), 1),  # unknown deep in the pod spec
        ((*rjob_path, "replicas"), "1"),  # a string for an integer
        (("spec", "failurePolicy", "maxRestarts"), 0.5),
        (("spec", "successPolicy", "operator"), "Every"),
        ((*container, "resources", "limits", "cpu"), [1]),  # not a Quantity
    ]:
        bad = copy.deepcopy(js)
        node = bad
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
        assert jobset_errors(bad), path


def test_jobset_names_fit_jobsets_dns_rules():
    long_run = "a-very-long-benchmark-run-name-that-goes-on-and-on"
    case_id = "qwen3-0-6b-sft-full-64k-recompute-auto-h200x8-1a2b3c"
    for run in (long_run, "1st-run", "nightly"):
        name = K.jobset_name(run, case_id)
        assert name == K.jobset_name(run, case_id) and len(name) <= K.JOBSET_NAME_MAX
        # the longest pod name JobSet derives (64 nodes, 5 random characters) is a DNS-1035 label
        assert (
            DNS_1035.match(f"{K.jobset_job_name(name)}-63-abcde") and len(f"{K.jobset_job_name(name)}-63-abcde") <= 63
        )
    assert K.jobset_name(long_run, case_id) != K.jobset_name(long_run + "x", case_id)


def test_engine_field_and_bad_values():
    assert api.parse_spec({"pools": [{"name": "a"}], "matrix": {"models": ["qwen3-0.6b"]}}).multi_node.engine == "Job"
    for bad, message in [({"engine": "jobset"}, "'Job' or 'JobSet'"), ({"engin": "JobSet"}, "unknown field")]:
        with pytest.raises(api.SpecError) as e:
            api.parse_spec({"pools": [{"name": "a"}], "matrix": {"models": ["qwen3-0.6b"]}, "multiNode": bad})
        assert e.value.field.startswith("spec.multiNode") and message in e.value.message
    errors = SchemaValidator(CRD).admit(
        {"spec": {"pools": [{"name": "a"}], "matrix": {"models": ["x"]}, "multiNode": {"engine": "jobset"}}}
    )
    assert [p for p, _ in errors] == ["spec.multiNode.engine"]
    assert "JobSetUnavailable" in C.FAILURE_REASONS


# --- reconcile ------------------------------------------------------------------------------------------------------


def test_reconcile_jobset_lifecycle():
    spec = _spec(queueName="team-a")
    cases = plan(spec)
    multi = next(c for c in cases if c.nodes == 2)
    js_name = K.jobset_name(RUN["metadata"]["name"], multi.id)
    child = K.jobset_job_name(js_name)
    run = copy.deepcopy(RUN)

    # discovery not answered yet: nothing is created for the JobSet case, the one-node case launches
    out = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="bench")
    assert [o["kind"] for o in out.create] == ["Job"]
    entry = {c["id"]: c for c in out.status["cases"]}[multi.id]
    assert entry["phase"] == "Pending" and entry["jobSet"] == js_name and entry["job"] == child

    # served: one JobSet, no Service and no Job of ours
    obs = reconcile.Observed(jobset_api=True)
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    assert sorted(o["kind"] for o in out.create) == ["Job", "JobSet"]
    (js,) = [o for o in out.create if o["kind"] == "JobSet"]
    assert js["metadata"]["name"] == js_name and js["spec"]["suspend"] is True
    assert ("Normal", "CaseLaunched") in [(t, r) for t, r, _ in out.events]

    # the JobSet waits for Kueue (no child Job yet): Pending, it holds its pool's slot, nothing is created again
    run["status"] = out.status
    obs = reconcile.Observed(jobset_api=True, jobsets={js_name: {**js, "metadata": {**js["metadata"]}}})
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    entry = {c["id"]: c for c in out.status["cases"]}[multi.id]
    assert entry["phase"] == "Pending" and "Kueue" in entry["message"]
    assert not [o for o in out.create if o["kind"] == "JobSet"]

    # admitted; the child Job failed: the case takes the reason of the pod that failed first
    rank0 = _pod("Failed", {"exitCode": 1, "finishedAt": "2026-02-07T03:00:09Z"})
    rank1 = _pod("Failed", {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-02-07T03:00:05Z"})
    obs.jobs[child] = {**_job("Failed", "PodFailurePolicy"), "metadata": {"name": child}}
    obs.pods[child] = [rank0, rank1]
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    entry = {c["id"]: c for c in out.status["cases"]}[multi.id]
    assert (entry["phase"], entry["reason"]) == ("Failed", "OOMKilled")

    # a pod no node takes: the case fails Unschedulable and the JobSet (not its child Job) is deleted
    stuck = _pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}])
    obs.jobs[child] = {**_job(), "metadata": {"name": child}}
    obs.pods[child] = [stuck]
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    entry = {c["id"]: c for c in out.status["cases"]}[multi.id]
    assert (entry["phase"], entry["reason"]) == ("Failed", "Unschedulable")
    assert out.delete_jobsets == []  # only once the status that says the case ended is written
    run["status"] = out.status
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    assert out.delete_jobsets == [js_name] and out.delete_jobs == []


def test_reconcile_jobset_api_not_served():
    spec = _spec()
    cases = plan(spec)
    out = reconcile.reconcile(
        copy.deepcopy(RUN), spec, cases, reconcile.Observed(jobset_api=False), now=NOW, namespace="b"
    )
    by_nodes = {c.nodes: {e["id"]: e for e in out.status["cases"]}[c.id] for c in cases}
    assert (by_nodes[2]["phase"], by_nodes[2]["reason"]) == ("Failed", "JobSetUnavailable")
    assert "jobset.x-k8s.io/v1alpha2" in by_nodes[2]["message"] and "finishedAt" in by_nodes[2]
    assert by_nodes[1]["phase"] == "Pending" and [o["kind"] for o in out.create] == ["Job"]  # the others run
    # engine Job: discovery does not matter
    spec = _spec(engine="Job")
    out = reconcile.reconcile(
        copy.deepcopy(RUN), spec, plan(spec), reconcile.Observed(jobset_api=False), now=NOW, namespace="b"
    )
    assert sorted(o["kind"] for o in out.create) == ["Job", "Job", "Service"]


def test_classify_jobset_without_child_job():
    js = {"metadata": {"name": "x"}, "spec": {"suspend": True}, "status": {}}
    assert failures.classify_jobset(js).phase == "Pending" and "Kueue" in failures.classify_jobset(js).message
    js["spec"]["suspend"] = False
    assert failures.classify_jobset(js) == failures.CaseState("Pending", None, "waiting for the JobSet's Job")
    js["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "boom"}]}
    v = failures.classify_jobset(js)
    assert (v.phase, v.reason, v.terminal) == ("Failed", "Error", True) and "boom" in v.message


# --- against the emulated cluster ------------------------------------------------------------------------------------

TWO_NODES = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: {name}
spec:
  pools:
    - name: cpu-a
      nodes: 2
      nodeSelector: {{trainbench.dev/test-pool: a}}
      image: trainer:test
    - name: cpu-b
      nodeSelector: {{trainbench.dev/test-pool: b}}
      image: trainer:test
  matrix:
    models: [tiny-qwen3]
    seqLens: [128]
    pools: {pools}
  steps: 2
  warmupSteps: 1
  multiNode:
    engine: {engine}
{extra}"""


@pytest.fixture
def jobset_cluster(tmp_path):
    with Cluster(tmp_path / "cluster", nodes=NODES, jobset=True) as c:
        yield c


def test_jobset_two_nodes_under_kueue_rendezvous_for_real(jobset_cluster, tmp_path):
    kubectl = Kubectl(jobset_cluster.kubeconfig)
    operator = Operator(jobset_cluster.kubeconfig, tmp_path)
    try:
        operator.start()
        kubectl.apply(TWO_NODES.format(name="js", pools="[cpu-a]", engine="JobSet", extra="  queueName: team-a\n"))

        def status():
            return kubectl.get_json("br", "js").get("status") or {}

        (js,) = wait_for(lambda: kubectl.get_json("jobsets")["items"], 60, "the JobSet", on_fail=operator.log)
        assert js["spec"]["suspend"] is True and js["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
        wait_for(lambda: "Kueue" in (status().get("cases") or [{}])[0].get("message", ""), 60, "the case to wait")
        assert kubectl.get_json("jobs")["items"] == [] and kubectl.get_json("pods")["items"] == []
        # an operator that restarts (killed: no cleanup) adopts the JobSet instead of creating another
        operator.kill()
        operator.start()
        # Kueue admits the whole JobSet (both pods at once) by unsuspending it
        kubectl("patch", "jobset", js["metadata"]["name"], "--type=merge", "-p", '{"spec": {"suspend": false}}')
        final = wait_for(
            lambda: (s := status()).get("resultsConfigMap") and s, 240, "the JobSet case to end", on_fail=operator.log
        )
        assert final["phase"] == "Succeeded", final["cases"]
        assert len(kubectl.get_json("jobsets")["items"]) == 1
        assert "created JobSet" in (tmp_path / "operator-1.log").read_text()
        assert "created JobSet" not in (tmp_path / "operator-2.log").read_text()
        js = kubectl.get_json("jobset", js["metadata"]["name"])
        assert {c["type"] for c in js["status"]["conditions"]} == {"Completed"}
        name = js["metadata"]["name"]
        (job,) = kubectl.get_json("jobs")["items"]
        assert job["metadata"]["name"] == f"{name}-node-0" == final["cases"][0]["job"]
        assert final["cases"][0]["jobSet"] == name
        assert job["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] == name
        assert job["metadata"]["ownerReferences"][0]["kind"] == "JobSet"
        assert kubectl.get_json("service", name)["spec"]["clusterIP"] == "None"  # made by JobSet, not by us
        assert len(kubectl.get_json("services")["items"]) == 1
        pods = kubectl.get_json("pods")["items"]
        assert sorted(p["spec"]["hostname"] for p in pods) == [f"{name}-node-0-0", f"{name}-node-0-1"]
        for obj in (job, *pods):
            kubernetes_validate.validate(obj, "1.30.0", strict=False)
        results = json.loads(kubectl.get_json("configmap", "js-results")["data"]["results.json"])
        (case,) = results["cases"]
        # both pods' torchrun joined one process group at JobSet's DNS name of pod 0
        assert case["phase"] == "Succeeded" and case["gpus"] == 2 and case["world_size"] == 2
        assert case["metrics"]["tps"]["mean"] > 0
    finally:
        operator.stop()


def test_jobset_not_served_fails_that_case_only_and_bad_engine_is_refused(cluster, kubectl, operator):
    operator.start()
    bad = TWO_NODES.format(name="bad", pools="[cpu-a]", engine="jobset", extra="")
    r = kubectl.apply(bad, check=False)
    assert r.returncode != 0 and "spec.multiNode.engine" in r.stderr and "JobSet" in r.stderr, r.stderr
    assert kubectl("get", "br", "bad", check=False).returncode != 0

    kubectl.apply(TWO_NODES.format(name="nojs", pools="[cpu-a, cpu-b]", engine="JobSet", extra=""))
    final = wait_for(
        lambda: (s := kubectl.get_json("br", "nojs").get("status") or {}).get("resultsConfigMap") and s,
        120,
        "the run to end",
        on_fail=operator.log,
    )
    assert final["phase"] == "PartiallyFailed"
    by_pool = {c["pool"]: c for c in final["cases"]}
    assert by_pool["cpu-b"]["phase"] == "Succeeded"
    assert (by_pool["cpu-a"]["phase"], by_pool["cpu-a"]["reason"]) == ("Failed", "JobSetUnavailable")
    assert "jobset.x-k8s.io/v1alpha2" in by_pool["cpu-a"]["message"]
    jobs = kubectl.get_json("jobs")["items"]
    assert [j["metadata"]["labels"]["trainbench.dev/pool"] for j in jobs] == ["cpu-b"]
    events = kubectl.get_json("events")["items"]
    assert any(e.get("reason") == "JobSetUnavailable" for e in events)
    results = json.loads(kubectl.get_json("configmap", "nojs-results")["data"]["results.json"])
    assert {c["pool"]: c["reason"] for c in results["cases"]}["cpu-a"] == "JobSetUnavailable"
