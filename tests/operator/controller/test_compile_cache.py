"""spec.pools[].compileCache: the pool's PersistentVolumeClaim mounted into every trainer pod (plain Job, Indexed
Job, JobSet) with torch's cache directories pointing into it; bad input refused by the CRD schema and by the
operator's parser with messages that name the field. Pure parts only (no cluster): < 1 s."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jobset_schema import jobset_errors
from kubesim import SchemaValidator

from trainbench.operator import api
from trainbench.operator import kube as K
from trainbench.operator.controller import reconcile
from trainbench.operator.plan import plan

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
RUN = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "nightly-20261123", "namespace": "bench", "uid": "u-1", "generation": 1},
}
CACHE = {"persistentVolumeClaim": {"claimName": "trainbench-compile-cache"}}
WANT_ENV = {
    "TORCHINDUCTOR_CACHE_DIR": "/cache/inductor",
    "TRITON_CACHE_DIR": "/cache/triton",
    "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
    "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
}


def _spec(pools: list[dict], **extra) -> api.BenchmarkRunSpec:
    return api.parse_spec({"pools": pools, "matrix": {"models": ["qwen3-0.6b"], "seqLens": [8192]}, **extra})


def _pod(obj: dict) -> dict:
    """The pod template of a Job, or of a JobSet's one replicated Job."""
    if obj["kind"] == "JobSet":
        return obj["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def _cache_parts(pod: dict) -> tuple[list, list, dict]:
    (c,) = pod["containers"]
    volumes = [v for v in pod["volumes"] if v["name"] == K.COMPILE_CACHE_VOLUME]
    mounts = [m for m in c["volumeMounts"] if m["name"] == K.COMPILE_CACHE_VOLUME]
    env = {e["name"]: e.get("value") for e in c["env"] if e["name"] in WANT_ENV}
    return volumes, mounts, env


def _assert_mounted(pod: dict, claim: str = "trainbench-compile-cache") -> None:
    volumes, mounts, env = _cache_parts(pod)
    assert volumes == [{"name": "compile-cache", "persistentVolumeClaim": {"claimName": claim}}]
    assert mounts == [{"name": "compile-cache", "mountPath": "/cache"}]
    assert env == WANT_ENV
    # every cache directory is on the volume
    assert all(v.startswith("/cache/") for k, v in env.items() if k.endswith("_DIR"))
    # the existing /dev/shm volume is kept, first
    assert pod["volumes"][0]["name"] == "dshm" and pod["containers"][0]["volumeMounts"][0]["mountPath"] == "/dev/shm"


def _assert_not_mounted(pod: dict) -> None:
    assert _cache_parts(pod) == ([], [], {})


# --- rendering -------------------------------------------------------------------------------------------------


def test_single_node_job_mounts_the_claim_and_sets_the_cache_env():
    case = plan(_spec([{"name": "h200", "gpusPerNode": 2, "compileCache": CACHE}]))[0]
    job = K.build_job(
        RUN, case, namespace="bench", pod=K.PodSettings(memory="64Gi", compile_cache_claim="trainbench-compile-cache")
    )
    kubernetes_validate.validate(job, "1.30.0", strict=True)
    _assert_mounted(_pod(job))
    # without a claim: nothing of it (the default)
    plain = K.build_job(RUN, case, namespace="bench", pod=K.PodSettings(memory="64Gi"))
    _assert_not_mounted(_pod(plain))
    # the cache changes nothing else of the pod
    with_cache = copy.deepcopy(_pod(job))
    c = with_cache["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] not in WANT_ENV]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != K.COMPILE_CACHE_VOLUME]
    with_cache["volumes"] = [v for v in with_cache["volumes"] if v["name"] != K.COMPILE_CACHE_VOLUME]
    assert with_cache == _pod(plain)


@pytest.mark.parametrize("engine", ["Job", "JobSet"])
def test_multi_node_pods_mount_it_too(engine):
    spec = _spec([{"name": "h200x2", "gpusPerNode": 8, "nodes": 2, "compileCache": CACHE}])
    case = plan(spec)[0]
    assert case.nodes == 2
    build = K.build_jobset if engine == "JobSet" else K.build_job
    obj = build(RUN, case, namespace="bench", pod=K.PodSettings(compile_cache_claim="trainbench-compile-cache"))
    if engine == "JobSet":
        assert jobset_errors(obj) == []
        rjob = obj["spec"]["replicatedJobs"][0]["template"]
        child = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x-node-0"}, "spec": rjob["spec"]}
        kubernetes_validate.validate(child, "1.30.0", strict=True)
    else:
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    _assert_mounted(_pod(obj))


def test_reconcile_passes_each_pools_claim_to_its_jobs():
    spec = _spec(
        [
            {"name": "h200", "compileCache": {"persistentVolumeClaim": {"claimName": "cache.h200"}}},
            {"name": "a6000"},
            {"name": "h100x2", "gpusPerNode": 8, "nodes": 2, "compileCache": CACHE},
        ],
        multiNode={"engine": "JobSet"},
    )
    cases = plan(spec)
    obs = reconcile.Observed(jobset_api=True)
    out = reconcile.reconcile(copy.deepcopy(RUN), spec, cases, obs, now=NOW, namespace="bench")
    made = {o["metadata"]["labels"][K.L_POOL]: o for o in out.create if o["kind"] in ("Job", "JobSet")}
    assert set(made) == {"h200", "a6000", "h100x2"} and made["h100x2"]["kind"] == "JobSet"
    _assert_mounted(_pod(made["h200"]), claim="cache.h200")
    _assert_not_mounted(_pod(made["a6000"]))
    _assert_mounted(_pod(made["h100x2"]))


# --- the API -------------------------------------------------------------------------------------------------------


def test_off_by_default_and_parsed():
    assert _spec([{"name": "a"}]).pools[0].compile_cache is None
    pool = _spec([{"name": "a", "compileCache": CACHE}]).pools[0]
    assert pool.compile_cache.persistent_volume_claim.claim_name == "trainbench-compile-cache"
    # round trip through the wire names (the results document's `spec` is the spec as applied)
    dumped = pool.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["compileCache"] == CACHE


def test_crd_fields_match_the_api_models():
    pool = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["pools"]
    cc = pool["items"]["properties"]["compileCache"]
    assert set(cc["properties"]) == {f.alias for f in api.CompileCache.model_fields.values()}
    pvc = cc["properties"]["persistentVolumeClaim"]
    assert set(pvc["properties"]) == {f.alias for f in api.PersistentVolumeClaimRef.model_fields.values()}
    assert cc["required"] == ["persistentVolumeClaim"] and pvc["required"] == ["claimName"]
    assert pvc["properties"]["claimName"]["pattern"] == api.DNS1123_SUBDOMAIN
    assert pvc["properties"]["claimName"]["maxLength"] == api.DNS1123_SUBDOMAIN_MAX


GOOD_NAMES = ["c", "compile-cache", "cache.h200", "a" * 253, "0cache9"]
# (compileCache, field the refusal names, words the operator's message holds)
BAD = [
    ({"persistentVolumeClaim": {"claimName": "Compile_Cache"}}, "claimName", "DNS-1123"),
    ({"persistentVolumeClaim": {"claimName": "-cache"}}, "claimName", "DNS-1123"),
    ({"persistentVolumeClaim": {"claimName": "cache."}}, "claimName", "DNS-1123"),
    ({"persistentVolumeClaim": {"claimName": ""}}, "claimName", "DNS-1123"),
    ({"persistentVolumeClaim": {"claimName": "a" * 254}}, "claimName", "at most 253"),
    ({"persistentVolumeClaim": {"claimName": 7}}, "claimName", "string"),
    ({"persistentVolumeClaim": {}}, "claimName", "required"),
    ({}, "persistentVolumeClaim", "required"),
    ({"emptyDir": {}}, "persistentVolumeClaim", "required"),  # the only source: a fresh emptyDir caches nothing
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_claim_names(name):
    cc = {"persistentVolumeClaim": {"claimName": name}}
    assert _spec([{"name": "a", "compileCache": cc}]).pools[0].compile_cache
    assert (
        SchemaValidator(CRD).admit(
            {"spec": {"pools": [{"name": "a", "compileCache": cc}], "matrix": {"models": ["x"]}}}
        )
        == []
    )


@pytest.mark.parametrize(("cache", "field", "words"), BAD, ids=[f"{f}-{w}-{i}" for i, (_, f, w) in enumerate(BAD)])
def test_bad_input_is_refused_by_parser_and_schema(cache, field, words):
    with pytest.raises(api.SpecError) as e:
        _spec([{"name": "a", "compileCache": cache}])
    assert e.value.field.startswith("spec.pools[0].compileCache") and e.value.field.endswith(field)
    assert words in e.value.message, e.value.message
    # the API server (the CRD's schema) refuses the same object, naming the same field
    obj = {"spec": {"pools": [{"name": "a", "compileCache": copy.deepcopy(cache)}], "matrix": {"models": ["x"]}}}
    errors = SchemaValidator(CRD).admit(obj)
    assert errors and errors[0][0].startswith("spec.pools[0].compileCache"), errors
