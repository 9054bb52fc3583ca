"""The operator's pure parts: CRD <-> api.py, examples, Job builders, failure classification, reconcile, /metrics."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubesim import SchemaValidator
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trainbench.operator import api
from trainbench.operator import kube as K
from trainbench.operator.controller import failures, reconcile
from trainbench.operator.controller.metrics import OperatorMetrics
from trainbench.operator.plan import plan
from trainbench.trainer import contract as C

ROOT = Path(__file__).resolve().parents[3]
CRD_TEXT = (ROOT / "manifests" / "crd.yaml").read_text()  # generated from operator/api.py (tests/chart checks it)
CRD = yaml.safe_load(CRD_TEXT)
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
NOW = datetime(2026, 2, 7, 3, 0, tzinfo=timezone.utc)
RUN = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "nightly-20260207", "namespace": "bench", "uid": "u-1", "generation": 1},
}


def k8s_valid(obj: dict) -> None:
    kubernetes_validate.validate(obj, "1.30.0", strict=True)


# --- the CRD -------------------------------------------------------------------------------------------------


def test_print_crd():
    out = subprocess.run(
        [sys.executable, "-m", "trainbench.cli", "operator", "--print-crd"], capture_output=True, text=True, check=True
    )
    assert out.stdout == CRD_TEXT


def _walk(schema: dict, path: str):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_every_field_is_described():
    missing = [
        p
        for p, s in _walk(SCHEMA, "")
        if p and not s.get("description") and not p.startswith(".metadata") and not p.endswith(("[]", "{}"))
    ]
    assert not missing, missing


@pytest.mark.parametrize(
    "model, path",
    [
        (api.BenchmarkRunSpec, ("spec",)),
        (api.Pool, ("spec", "pools", "[]")),
        (api.CompileCache, ("spec", "pools", "[]", "compileCache")),
        (api.PersistentVolumeClaimRef, ("spec", "pools", "[]", "compileCache", "persistentVolumeClaim")),
        (api.Matrix, ("spec", "matrix")),
        (api.CaseSelector, ("spec", "matrix", "include", "[]")),
        (api.Lora, ("spec", "lora")),
        (api.Baseline, ("spec", "baseline")),
        (api.Thresholds, ("spec", "thresholds")),
        (api.MultiNode, ("spec", "multiNode")),
    ],
)
def test_crd_fields_and_defaults_match_api(model, path):
    node = SCHEMA
    for p in path:
        node = node["items"] if p == "[]" else node["properties"][p]
    crd_fields = set(node["properties"])
    api_fields = {f.alias or name for name, f in model.model_fields.items()}
    assert crd_fields == api_fields
    for name, f in model.model_fields.items():
        prop = node["properties"][f.alias or name]
        if "default" in prop and f.default_factory is None:
            assert prop["default"] == f.default, name
    # the schema's defaults give the same object pydantic builds from nothing
    if model is api.BenchmarkRunSpec:
        spec = {"pools": [{"name": "a"}], "matrix": {"models": ["qwen3-0.6b"]}}
        SchemaValidator(CRD).admit(obj := {"spec": copy.deepcopy(spec)})
        assert api.parse_spec(obj["spec"]) == api.parse_spec(spec)


def test_crd_names_columns_and_status():
    names = CRD["spec"]["names"]
    assert names["shortNames"] == ["br"] and names["categories"] == ["trainbench"]
    version = CRD["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert cols == ["Phase", "Cases", "Failed", "Regressions", "Age"]
    case_phases = SCHEMA["properties"]["status"]["properties"]["cases"]["items"]["properties"]["phase"]["enum"]
    assert tuple(case_phases) == C.CASE_PHASES
    run_phases = SCHEMA["properties"]["status"]["properties"]["phase"]["enum"]
    assert set(run_phases) == set(reconcile.RUN_PHASES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_are_admitted_and_plan(path):
    doc = yaml.safe_load(path.read_text())
    assert SchemaValidator(CRD).admit(doc) == []
    cases = plan(doc["spec"])
    assert cases
    for case in cases:
        k8s_valid(K.build_job(RUN, case, namespace="bench"))


def test_nightly_example_has_the_seed_columns():
    doc = yaml.safe_load((ROOT / "manifests" / "examples" / "nightly-prime-rl.yaml").read_text())
    cases = plan(doc["spec"])
    assert {c.type for c in cases} == {"rl-full", "rl-lora", "sft-full"}
    assert {c.seq_len for c in cases} >= {8192, 16384, 65536}
    assert {c.ac for c in cases} == {"recompute", "offload"} and {c.attn for c in cases} == {"fa2", "fa3", "fa4"}
    assert {c.ep for c in cases} == {1, 8} and {c.pool for c in cases} == {"h100", "h200x8", "b200x8", "a6000"}


# --- Job builders ----------------------------------------------------------------------------------------------


def _spec(**pool):
    return api.parse_spec(
        {
            "pools": [{"name": "mi300x", "gpusPerNode": 8, "resourceName": "amd.com/gpu", **pool}],
            "matrix": {"models": ["qwen3-0.6b"], "seqLens": [16384]},
            "timeoutSeconds": 1200,
        }
    )


def test_job_single_node():
    spec = _spec(memory="256Gi", cpu="32", tolerations=[{"key": "amd.com/gpu", "operator": "Exists"}])
    case = plan(spec)[0]
    pool = spec.pools[0]
    job = K.build_job(
        RUN,
        case,
        namespace="bench",
        pod=K.PodSettings(
            resource_name=pool.resource_name,
            node_selector={"gpu": "mi300x"},
            tolerations=[t.model_dump(exclude_none=True) for t in pool.tolerations],
            cpu=pool.cpu,
            memory=pool.memory,
        ),
    )
    k8s_valid(job)
    assert job["metadata"]["name"] == K.job_name("nightly-20260207", case.id)
    assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"amd.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    assert c["command"][:4] == ["torchrun", "--nproc-per-node=8", "--nnodes=1", "--standalone"]
    assert c["command"][4:6] == ["-m", "trainbench.trainer"]
    assert c["command"][6:] == case.trainer_args(run="nightly-20260207", metrics_port=C.METRICS_PORT)
    assert c["ports"][0] == {"name": "metrics", "containerPort": C.METRICS_PORT, "protocol": "TCP"}
    assert job["spec"]["activeDeadlineSeconds"] == 1200 and "suspend" not in job["spec"]
    assert job["spec"]["template"]["spec"]["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Gi"}
    assert K.build_service(RUN, case, namespace="bench") is None


def test_job_multi_node_and_kueue():
    spec = _spec(nodes=2)
    case = plan(spec)[0]
    job = K.build_job(
        RUN, case, namespace="bench", pod=K.PodSettings(resource_name="amd.com/gpu"), queue_name="gpu-queue"
    )
    svc = K.build_service(RUN, case, namespace="bench")
    k8s_valid(job)
    k8s_valid(svc)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 2
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][K.L_KUEUE_QUEUE] == "gpu-queue"
    assert (
        svc["spec"]["clusterIP"] == "None" and job["spec"]["template"]["spec"]["subdomain"] == svc["metadata"]["name"]
    )
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--nnodes=2" in cmd and "--standalone" not in cmd
    # Kubeflow Trainer's environment contract: torchrun reads the rank and the rendezvous from PET_*
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PET_NNODES"]["value"] == "2" and env["PET_NPROC_PER_NODE"]["value"] == str(case.gpus_per_node)
    assert env["PET_MASTER_ADDR"]["value"] == f"{job['metadata']['name']}-0.{svc['metadata']['name']}"
    assert env["PET_MASTER_PORT"]["value"] == str(K.RDZV_PORT)
    index_ref = env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_ref == "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_multi_node_failure_takes_the_reason_of_the_pod_that_failed_first():
    def pod(index, exit_code, reason, finished):
        term = {"exitCode": exit_code, "reason": reason, "finishedAt": finished, "message": ""}
        return {
            "metadata": {"labels": {K.L_JOB_INDEX: str(index)}},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "trainer", "state": {"terminated": term}}]},
        }

    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}
    rank0 = pod(0, 1, "Error", "2026-11-22T03:00:09Z")  # lost its peer
    rank1 = pod(1, 137, "OOMKilled", "2026-11-22T03:00:05Z")  # the cause
    v = failures.classify(job, [rank0, rank1], now=datetime.now(timezone.utc))
    assert (v.phase, v.reason) == ("Failed", "OOMKilled")


def test_names_are_deterministic_and_distinct():
    a = K.job_name(
        "a-very-long-benchmark-run-name-that-goes-on-and-on", "qwen3-0-6b-sft-full-8k-recompute-auto-h100-1a2b3c"
    )
    assert a == K.job_name(
        "a-very-long-benchmark-run-name-that-goes-on-and-on", "qwen3-0-6b-sft-full-8k-recompute-auto-h100-1a2b3c"
    )
    assert len(a) <= 63
    assert a != K.job_name(
        "a-very-long-benchmark-run-name-that-goes-on-and-oN", "qwen3-0-6b-sft-full-8k-recompute-auto-h100-1a2b3c"
    )
    assert len(K.label_value("x" * 100)) <= 63


def test_configmap_and_metrics_url():
    cm = K.build_configmap(RUN, "r-results", {"results.json": "{}"}, namespace="bench", suite="nightly")
    k8s_valid(cm)
    pod = {
        "metadata": {"annotations": {K.A_METRICS_PORT: "9999"}},
        "spec": {"containers": [{"ports": [{"name": "metrics", "containerPort": 9411}]}]},
        "status": {"podIP": "10.0.0.7"},
    }
    assert K.metrics_url(pod) == "http://10.0.0.7:9411/metrics"
    del pod["spec"]["containers"][0]["ports"]
    assert K.metrics_url(pod) == "http://10.0.0.7:9999/metrics"
    pod["status"] = {}
    assert K.metrics_url(pod) is None


# --- failure classification -------------------------------------------------------------------------------------


def _pod(phase="Running", terminated=None, waiting=None, conditions=None, reason=None, created=NOW):
    status = {"phase": phase, "conditions": conditions or []}
    if reason:
        status["reason"] = reason
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    status["containerStatuses"] = [{"name": "trainer", "state": state}]
    return {"metadata": {"name": "p", "creationTimestamp": created.isoformat()}, "spec": {}, "status": status}


def _job(cond=None, reason=None, suspend=False):
    status = {"conditions": [{"type": cond, "status": "True", "reason": reason}]} if cond else {}
    return {"metadata": {"name": "j"}, "spec": {"suspend": suspend}, "status": status}


RESULT = '{"status": "ok", "metrics": {"tps": {"mean": 10}}}'


@pytest.mark.parametrize(
    "job, pods, logs, want",
    [
        (_job("Complete"), [_pod("Succeeded", {"exitCode": 0, "message": RESULT})], None, ("Succeeded", None)),
        (_job("Complete"), [_pod("Succeeded", {"exitCode": 0})], None, ("MetricsUnavailable", "MetricsUnavailable")),
        (_job("Failed"), [_pod("Failed", {"exitCode": 137, "reason": "OOMKilled"})], None, ("Failed", "OOMKilled")),
        (_job("Failed"), [_pod("Failed", {"exitCode": 3})], "CUDA out of memory", ("Failed", "OutOfMemory")),
        (_job("Failed"), [_pod("Failed", {"exitCode": 2})], "unknown model", ("Failed", "BadConfig")),
        (_job("Failed"), [_pod("Failed", {"exitCode": 1})], "Traceback\nKeyError: x", ("Failed", "Error")),
        (_job("Failed", "DeadlineExceeded"), [], None, ("Failed", "Timeout")),
        (_job("Failed"), [_pod("Failed", reason="Evicted")], None, ("Failed", "Evicted")),
        (_job(), [_pod("Pending", waiting={"reason": "ImagePullBackOff"}, created=NOW - timedelta(hours=1))], None, ("Failed", "ImagePullBackOff")),
        (_job(), [_pod("Pending", waiting={"reason": "ErrImagePull"})], None, ("Pending", None)),
        (_job(), [_pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": (NOW - timedelta(minutes=5)).isoformat()}])], None, ("Failed", "Unschedulable")),
        (_job(), [_pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": NOW.isoformat()}])], None, ("Pending", None)),
        (_job(suspend=True), [], None, ("Pending", None)),
        (_job(), [_pod("Running")], None, ("Running", None)),
    ],
)  # fmt: skip
def test_classify(job, pods, logs, want):
    v = failures.classify(job, pods, now=NOW, logs=logs)
    assert (v.phase, v.reason) == want
    if want[1] == "Error":
        assert "exit code 1" in v.message and "KeyError: x" in v.message
    if want[1] in ("Unschedulable", "ImagePullBackOff"):
        assert v.stop_job


# --- reconcile ---------------------------------------------------------------------------------------------------


def _observed(cases, run, finished=(), running=()):
    obs = reconcile.Observed()
    for case in cases:
        name = K.job_name(run["metadata"]["name"], case.id)
        if case.id in finished:
            obs.jobs[name] = {
                **_job("Complete"),
                "metadata": {"name": name, "creationTimestamp": "2026-02-07T01:00:00Z"},
            }
            obs.pods[name] = [_pod("Succeeded", {"exitCode": 0, "message": RESULT})]
        elif case.id in running:
            obs.jobs[name] = {**_job(), "metadata": {"name": name}}
            obs.pods[name] = [_pod("Running")]
    return obs


def test_reconcile_launches_up_to_max_concurrent_and_converges():
    spec = api.parse_spec(
        {
            "pools": [{"name": "h100", "maxConcurrent": 2}],
            "matrix": {"models": ["qwen3-0.6b"], "seqLens": [1024, 2048, 4096]},
        }
    )
    cases = plan(spec)
    run = copy.deepcopy(RUN)
    out = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="bench")
    assert [o["kind"] for o in out.create] == ["Job", "Job"] and out.status["phase"] == "Running"
    assert [e[1] for e in out.events].count("CaseLaunched") == 2
    # the same observation again (a restart that sees the Jobs): nothing new to create
    run["status"] = out.status
    obs = _observed(cases, run, running=[cases[0].id, cases[1].id])
    out2 = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    assert out2.create == [] and out2.status["running"] == 2 and out2.status["pending"] == 1
    # one finishes: the third launches
    run["status"] = out2.status
    obs = _observed(cases, run, finished=[cases[0].id], running=[cases[1].id])
    out3 = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    assert [o["metadata"]["name"] for o in out3.create] == [K.job_name(run["metadata"]["name"], cases[2].id)]
    done = {c["id"]: c for c in out3.status["cases"]}[cases[0].id]
    assert done["phase"] == "Succeeded" and done["tps"] == 10 and done["state"] == "done"
    # all end
    run["status"] = out3.status
    obs = _observed(cases, run, finished=[c.id for c in cases])
    out4 = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="bench")
    assert out4.all_ended and out4.status["phase"] == "Succeeded" and out4.status["progress"] == "3/3"
    assert ("Normal", "RunSucceeded") in [(t, r) for t, r, _ in out4.events]


def test_reconcile_suspend_progress_and_kept_terminal_cases():
    spec = api.parse_spec({"pools": [{"name": "h100"}], "matrix": {"models": ["qwen3-0.6b"]}, "suspend": True})
    cases = plan(spec)
    out = reconcile.reconcile(copy.deepcopy(RUN), spec, cases, reconcile.Observed(), now=NOW, namespace="b")
    assert out.create == [] and out.status["phase"] == "Suspended"
    # a case that ended Unschedulable and whose Job was deleted stays Failed
    run = {**RUN, "status": {"cases": [{"id": cases[0].id, "phase": "Failed", "reason": "Unschedulable"}]}}
    out = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="b")
    assert out.status["cases"][0]["reason"] == "Unschedulable" and out.status["phase"] == "Failed"
    # live progress from a scrape lands in the case's status
    spec = api.parse_spec({"pools": [{"name": "h100"}], "matrix": {"models": ["qwen3-0.6b"]}})
    obs = _observed(cases, RUN, running=[cases[0].id])
    obs.progress[cases[0].id] = {"state": "measuring", "step": 3, "steps_total": 6, "tps": 1234.0, "mfu": 20.5}
    out = reconcile.reconcile(copy.deepcopy(RUN), spec, cases, obs, now=NOW, namespace="b")
    entry = out.status["cases"][0]
    assert (entry["state"], entry["step"], entry["stepsTotal"], entry["tps"], entry["mfu"]) == (
        "measuring",
        3,
        6,
        1234.0,
        20.5,
    )


def test_no_result_json_falls_back_to_the_last_scrape():
    spec = api.parse_spec({"pools": [{"name": "h100"}], "matrix": {"models": ["qwen3-0.6b"]}})
    cases = plan(spec)
    name = K.job_name(RUN["metadata"]["name"], cases[0].id)
    obs = reconcile.Observed(jobs={name: {**_job("Complete"), "metadata": {"name": name}}})
    obs.pods[name] = [_pod("Succeeded", {"exitCode": 0})]  # exited 0, no termination message
    # never scraped: MetricsUnavailable, not Succeeded
    out = reconcile.reconcile(copy.deepcopy(RUN), spec, cases, obs, now=NOW, namespace="b")
    assert out.status["cases"][0]["phase"] == "MetricsUnavailable" and out.status["phase"] == "Failed"
    # scraped while measuring: the last scrape stands in
    run = {**RUN, "status": {"cases": [{"id": cases[0].id, "phase": "Running", "step": 4, "tps": 900.0, "mfu": 12.0}]}}
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="b")
    assert out.status["cases"][0]["phase"] == "Succeeded"
    outcome = reconcile.outcomes(cases, out.status, obs)[cases[0].id]
    assert outcome["result"]["metrics"]["tps"]["mean"] == 900.0 and outcome["result"]["source"] == "last-scrape"
    from trainbench.operator.results import document as results

    doc = results.build_results("r", "s", spec, cases, {cases[0].id: outcome}, None, None, {})
    assert doc["cases"][0]["metrics"]["tps"]["mean"] == 900.0 and doc["cases"][0]["phase"] == "Succeeded"


def test_results_json_fits_a_configmap():
    from trainbench.operator.results import document as results

    spec = api.parse_spec({"pools": [{"name": "h100"}], "matrix": {"models": ["qwen3-0.6b"], "seqLens": [1024]}})
    one = plan(spec)[0]  # 400 cases (more than one matrix may plan): the one planned case at 400 sequence lengths
    cases = [dataclasses.replace(one, id=f"{one.id}-{i}", seq_len=1024 + 8 * i) for i in range(400)]
    big = {"status": "ok", "metrics": {"tps": {"mean": 1.0}}, "config": {"note": "x" * 4000}, "environment": {"a": "b"}}
    outs = {c.id: {"phase": "Succeeded", "result": big} for c in cases}
    doc = results.build_results("r", "s", spec, cases, outs, None, None, {})
    text = results.configmap_text(doc)
    assert len(text.encode()) <= K.CONFIGMAP_VALUE_LIMIT_BYTES < K.CONFIGMAP_LIMIT_BYTES
    back = results.load_results(text)
    assert len(back["cases"]) == 400 and back["cases"][0]["metrics"]["tps"]["mean"] == 1.0


def test_invalid_status_names_the_field():
    st = reconcile.invalid_status({}, 3, "spec.matrix.models[0]", "unknown model 'gpt-9'", NOW)
    cond = {c["type"]: c for c in st["conditions"]}["SpecValid"]
    assert st["phase"] == "Failed" and cond["status"] == "False" and cond["observedGeneration"] == 3
    assert cond["message"].startswith("spec.matrix.models[0]: unknown model")


# --- the operator's /metrics -----------------------------------------------------------------------------------


def test_operator_metrics_names_and_labels():
    m = OperatorMetrics()
    status = {
        "phase": "PartiallyFailed",
        "completedAt": "2026-02-07T03:03:00Z",
        "cases": [{"id": "a", "phase": "Succeeded", "pool": "h100"}, {"id": "b", "phase": "Running", "pool": "h100", "step": 2, "stepsTotal": 4}],
    }  # fmt: skip
    case = {"id": "a", "model": "qwen3-0.6b", "type": "sft-full", "pool": "h100", "seq_len": 8192, "ac": "recompute", "attn": "fa3", "phase": "Succeeded"}  # fmt: skip
    case["metrics"] = {
        "mfu": {"mean": 16.8},
        "tps": {"mean": 26010.0},
        "step_time": {"mean": 0.32},
        "peak_memory_gib": 31.7,
    }
    case["verdicts"] = {"mfu": {"status": "regression"}}
    failed = {**case, "id": "c", "phase": "Failed", "reason": "OOMKilled", "metrics": None, "verdicts": None}
    m.update("ns", "nightly-1", "nightly", status, {"cases": [case, failed]})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(m)
    samples = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for sm in fam.samples:
            samples.setdefault(sm.name, []).append((sm.labels, sm.value))
    labels = dict(zip(C.RESULT_LABELS, ["nightly", "nightly-1", "a", "qwen3-0.6b", "sft-full", "h100", "8192", "recompute", "fa3"], strict=True))  # fmt: skip
    assert samples[C.OM_RESULT_MFU] == [(labels, 16.8)]
    assert samples[C.OM_RESULT_TPS] == [(labels, 26010.0)]
    assert samples[C.OM_RESULT_STEP_TIME] == [(labels, 0.32)]
    assert samples[C.OM_RESULT_PEAK_MEMORY] == [(labels, 31.7 * 2**30)]
    assert samples[C.OM_REGRESSION] == [({**labels, "metric": "mfu"}, 1.0)]
    assert samples[C.OM_CASE_FAILED] == [({**labels, "case": "c", "reason": "OOMKilled"}, 1.0)]
    assert ({"phase": "PartiallyFailed"}, 1.0) in samples[C.OM_RUNS]
    assert ({"phase": "Running"}, 1.0) in samples[C.OM_CASES]
    assert samples[C.OM_CASE_PROGRESS] == [({"suite": "nightly", "run": "nightly-1", "case": "b", "pool": "h100"}, 0.5)]
    assert samples[C.OM_RUN_COMPLETED][0][0] == {"suite": "nightly", "run": "nightly-1", "phase": "PartiallyFailed"}
    m.forget("ns", "nightly-1")
    assert C.OM_RESULT_MFU + "{" not in generate_latest(registry).decode()
