"""Bad input: malformed BenchmarkRuns are refused by the CRD schema (CEL included) when applied, or failed by
the operator with a SpecValid=False condition and a Warning Event naming the field, while the operator keeps
serving a good run (which also has a case that no node can take, Unschedulable, and one whose image cannot be
pulled, ImagePullBackOff)."""

from __future__ import annotations

import copy
import json
import re

import yaml
from ophelpers import wait_for

GOOD_SPEC = {
    "pools": [{"name": "cpu-a", "nodeSelector": {"trainbench.dev/test-pool": "a"}, "image": "trainer:test"}],
    "matrix": {"models": ["tiny-qwen3"], "seqLens": [128]},
    "steps": 2,
}


def spec_with(**changes) -> dict:
    spec = copy.deepcopy(GOOD_SPEC)
    for path, value in changes.items():
        node = spec
        *parents, last = path.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return spec


DELETE = object()
POOL = GOOD_SPEC["pools"][0]

# (name, spec, field the refusal must name)
REFUSED_BY_SCHEMA = [
    ("no-pools", spec_with(pools=DELETE), "pools"),
    ("empty-pools", spec_with(pools=[]), "spec.pools"),
    ("bad-pool-name", spec_with(pools=[{**POOL, "name": "GPU_A"}]), "spec.pools[0].name"),
    ("zero-gpus", spec_with(pools=[{**POOL, "gpusPerNode": 0}]), "spec.pools[0].gpusPerNode"),
    ("too-many-gpus", spec_with(pools=[{**POOL, "gpusPerNode": 17}]), "spec.pools[0].gpusPerNode"),
    ("bad-resource", spec_with(pools=[{**POOL, "resourceName": "nvidia.com/GPU!"}]), "spec.pools[0].resourceName"),
    ("bad-toleration", spec_with(pools=[{**POOL, "tolerations": [{"operator": "Maybe"}]}]), "tolerations[0].operator"),
    ("bad-memory", spec_with(pools=[{**POOL, "memory": "lots"}]), "spec.pools[0].memory"),
    (
        "bad-cache-claim",
        spec_with(pools=[{**POOL, "compileCache": {"persistentVolumeClaim": {"claimName": "Cache_1"}}}]),
        "spec.pools[0].compileCache.persistentVolumeClaim.claimName",
    ),
    ("cache-no-source", spec_with(pools=[{**POOL, "compileCache": {}}]), "spec.pools[0].compileCache"),
    ("no-models", spec_with(matrix__models=[]), "spec.matrix.models"),
    ("bad-type", spec_with(matrix__types=["pretrain"]), "spec.matrix.types[0]"),
    ("zero-seq", spec_with(matrix__seqLens=[0]), "spec.matrix.seqLens[0]"),
    ("bad-ac", spec_with(matrix__ac=["fast"]), "spec.matrix.ac[0]"),
    ("bad-attn", spec_with(matrix__attn=["fa9"]), "spec.matrix.attn[0]"),
    ("zero-steps", spec_with(steps=0), "spec.steps"),
    ("text-steps", spec_with(steps="five"), "spec.steps"),
    ("short-timeout", spec_with(timeoutSeconds=10), "spec.timeoutSeconds"),
    ("zero-threshold", spec_with(thresholds={"default": 0}), "spec.thresholds.default"),
    ("zero-lora-rank", spec_with(lora={"rank": 0}), "spec.lora.rank"),
    ("bad-baseline", spec_with(baseline={"source": "yesterday"}), "spec.baseline.source"),
    # cross-field rules: CEL (x-kubernetes-validations)
    ("dup-pools", spec_with(pools=[POOL, POOL]), "spec.pools"),
    ("batch-vs-micro", spec_with(batchSize=3, microBatch=2), "spec.batchSize"),
    ("unknown-matrix-pool", spec_with(matrix__pools=["nope"]), "spec.matrix.pools"),
    ("baseline-no-cm", spec_with(baseline={"source": "configMap"}), "spec.baseline.configMap"),
    ("include-no-model", spec_with(matrix__include=[{"type": "rl-full"}]), "spec.matrix.include"),
    ("include-bad-pool", spec_with(matrix__include=[{"model": "tiny-qwen3", "pool": "x"}]), "spec.matrix.include"),
] + [  # hostile input (issue 19): each family, refused at admission (the local path: tests/operator/test_hostile_input)
    ("string-seq-len", spec_with(matrix__seqLens=["8192"]), "spec.matrix.seqLens[0]"),
    ("string-suspend", spec_with(suspend="true"), "spec.suspend"),
    ("huge-timeout", spec_with(timeoutSeconds=2**70), "spec.timeoutSeconds"),
    ("week-plus-timeout", spec_with(timeoutSeconds=10**9), "spec.timeoutSeconds"),
    ("empty-image", spec_with(pools=[{**POOL, "image": ""}]), "spec.pools[0].image"),
    ("space-image", spec_with(pools=[{**POOL, "image": "trainer: test"}]), "spec.pools[0].image"),
    ("long-hardware", spec_with(pools=[{**POOL, "hardware": "H" * 300}]), "spec.pools[0].hardware"),
    (
        "markdown-hardware",
        spec_with(pools=[{**POOL, "hardware": "## H100 | <img src=x onerror=alert(1)>"}]),
        "spec.pools[0].hardware",
    ),
    ("selector-bad-key", spec_with(pools=[{**POOL, "nodeSelector": {"bad key!": "a"}}]), "spec.pools[0].nodeSelector"),
    ("selector-bad-value", spec_with(pools=[{**POOL, "nodeSelector": {"a": "b c"}}]), "spec.pools[0].nodeSelector.a"),
    (
        "toleration-exists-value",
        spec_with(pools=[{**POOL, "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}]),
        "spec.pools[0].tolerations[0].value",
    ),
    (
        "toleration-seconds",
        spec_with(pools=[{**POOL, "tolerations": [{"key": "k", "operator": "Exists", "tolerationSeconds": 5}]}]),
        "spec.pools[0].tolerations[0].tolerationSeconds",
    ),
    (
        "toleration-bad-key",
        spec_with(pools=[{**POOL, "tolerations": [{"key": "bad key", "operator": "Exists"}]}]),
        "spec.pools[0].tolerations[0].key",
    ),
    (
        "toleration-no-key-equal",
        spec_with(pools=[{**POOL, "tolerations": [{"operator": "Equal", "value": "x"}]}]),
        "spec.pools[0].tolerations[0].operator",
    ),
    ("resource-cpu", spec_with(pools=[{**POOL, "resourceName": "cpu"}]), "spec.pools[0].resourceName"),
    ("resource-unqualified", spec_with(pools=[{**POOL, "resourceName": "gpu"}]), "spec.pools[0].resourceName"),
    (
        "resource-k8s-domain",
        spec_with(pools=[{**POOL, "resourceName": "kubernetes.io/gpu"}]),
        "spec.pools[0].resourceName",
    ),
    ("one-byte-memory", spec_with(pools=[{**POOL, "memory": "1"}]), "spec.pools[0].memory"),
    ("zero-cpu", spec_with(pools=[{**POOL, "cpu": "0"}]), "spec.pools[0].cpu"),
    ("dup-seq-lens", spec_with(matrix__seqLens=[128, 128]), "spec.matrix.seqLens[1]"),
    ("dup-models", spec_with(matrix__models=["tiny-qwen3", "tiny-qwen3"]), "spec.matrix.models[1]"),
    ("exclude-unknown-pool", spec_with(matrix__exclude=[{"pool": "nope"}]), "spec.matrix.exclude"),
    ("huge-batch", spec_with(batchSize=10**12), "spec.batchSize"),
    ("huge-decode-batch", spec_with(generate={"batchSizes": [10**9]}), "spec.generate.batchSizes[0]"),
    ("hot-temperature", spec_with(generate={"temperature": 1000}), "spec.generate.temperature"),
    ("verify-memory", spec_with(verify={"runMemoryMib": 10**9}), "spec.verify.runMemoryMib"),
    ("lora-bad-target", spec_with(lora={"targets": ["q_proj; rm -rf /"]}), "spec.lora.targets[0]"),
    ("model-json-path", spec_with(matrix__models=['{"hidden_size": 1}.json']), "spec.matrix.models[0]"),
    ("many-seq-lens", spec_with(matrix__seqLens=list(range(128, 128 + 40))), "spec.matrix.seqLens"),
]

# valid for the schema, refused by the operator's parser/planner (needs the model registry / arithmetic)
REFUSED_BY_OPERATOR = [
    ("unknown-model", spec_with(matrix__models=["gpt-9"]), "spec.matrix.models[0]"),
    ("all-excluded", spec_with(matrix__exclude=[{"model": "tiny-qwen3"}]), "spec.matrix"),
    ("ep-on-dense", spec_with(matrix__ep=[2]), "spec.matrix"),
    ("cp-not-dividing", spec_with(matrix__cp=[3]), "spec.matrix"),
    ("include-unknown-model", spec_with(matrix__include=[{"model": "gpt-9"}]), "spec.matrix.include[0].model"),
    # hostile input (issue 19): valid for the schema, refused by the planner with the field
    (
        "exclude-model-not-in-matrix",
        spec_with(matrix__exclude=[{"model": "qwen3-0.6b"}]),
        "spec.matrix.exclude[0].model",
    ),
    (
        "lora-target-no-module",
        spec_with(matrix__types=["rl-lora"], lora={"targets": ["c_attn"]}),
        "spec.lora.targets[0]",
    ),
    (
        "generate-past-context",
        spec_with(matrix__types=["generate"], matrix__seqLens=[4000], generate={"newTokens": 1024}),
        "spec.generate.newTokens",
    ),
    ("model-path-in-cluster", spec_with(matrix__models=["/etc/trainbench/model.json"]), "spec.matrix.models[0]"),
    (
        "matrix-too-large",  # 32 x 16 x 16 = 8192 x 2 pools before exclude: counted, never expanded
        spec_with(
            pools=[POOL, {**POOL, "name": "cpu-b"}],
            matrix__seqLens=list(range(1024, 1024 + 32)),
            matrix__ep=list(range(1, 17)),
            matrix__cp=list(range(1, 17)),
        ),
        "spec.matrix",
    ),
]


def manifest(name: str, spec: dict) -> str:
    return yaml.safe_dump(
        {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": name}, "spec": spec}
    )


def test_bad_input_refused_and_others_served(cluster, kubectl, operator):
    assert len(REFUSED_BY_SCHEMA) + len(REFUSED_BY_OPERATOR) >= 20
    # admission needs no operator: the schema cases first, while the emulated API server is idle
    # one kubectl apply of every schema case (a document each): kubectl goes on past each refusal and says each
    r = kubectl.apply("---\n".join(manifest(name, spec) for name, spec, _ in REFUSED_BY_SCHEMA), check=False)
    assert r.returncode != 0
    refusals = {}
    for chunk in r.stderr.split("Error from server")[1:]:
        named = re.search(r'BenchmarkRun(?:\.trainbench\.dev)? "([^"]+)" is invalid', chunk)
        assert named, chunk
        refusals[named.group(1)] = chunk
    for name, _spec, field in REFUSED_BY_SCHEMA:
        assert name in refusals, f"{name}: the API server accepted it"
        assert field in refusals[name], f"{name}: {refusals[name]}"
    stored = {item["metadata"]["name"] for item in kubectl.get_json("br")["items"]}
    assert not stored & set(refusals)  # nothing stored

    operator.start()
    nowhere = {"name": "nowhere", "nodeSelector": {"trainbench.dev/test-pool": "none"}}
    nopull = {**POOL, "name": "nopull", "image": "missing.example/trainer:0"}
    good = spec_with(pools=[POOL, nowhere, nopull])
    # a case that runs past timeoutSeconds (30 s, the minimum) while the rest of the test goes on: Timeout
    kubectl.apply(manifest("slow", spec_with(steps=10000, timeoutSeconds=30)))
    half = len(REFUSED_BY_OPERATOR) // 2
    for name, spec, _ in REFUSED_BY_OPERATOR[:half]:  # bad runs before the good one ...
        kubectl.apply(manifest(name, spec))
    kubectl.apply(manifest("good", good))
    for name, spec, _ in REFUSED_BY_OPERATOR[half:]:  # ... and while it runs
        kubectl.apply(manifest(name, spec))

    def refused(name):
        st = kubectl.get_json("br", name).get("status") or {}
        conds = {c["type"]: c for c in st.get("conditions") or []}
        return st.get("phase") == "Failed" and conds.get("SpecValid", {}).get("status") == "False" and conds

    for name, _spec, field in REFUSED_BY_OPERATOR:
        conds = wait_for(lambda name=name: refused(name), 60, f"{name} to be refused", on_fail=operator.log)
        assert conds["SpecValid"]["message"].startswith(field), (name, conds["SpecValid"]["message"])
        assert conds["SpecValid"]["observedGeneration"] == 1
    bad_jobs = kubectl.get_json("jobs", "-l", "trainbench.dev/run!=good,trainbench.dev/run!=slow")["items"]
    assert not bad_jobs  # bad runs start nothing

    def warned():  # kopf posts Events in the background: give it a moment
        events = kubectl.get_json("events")["items"]
        return {e["involvedObject"]["name"] for e in events if e.get("reason") == "InvalidSpec"}

    expected = {name for name, _, _ in REFUSED_BY_OPERATOR}
    wait_for(lambda: warned() == expected, 120, "an InvalidSpec Warning Event per refused run")

    status = wait_for(
        lambda: (s := kubectl.get_json("br", "good").get("status") or {}).get("resultsConfigMap") and s,
        240,
        "the good run to end",
        on_fail=lambda: json.dumps(kubectl.get_json("br", "good").get("status"), indent=1) + operator.log(),
    )
    assert status["phase"] == "PartiallyFailed"
    by_pool = {c["pool"]: c for c in status["cases"]}
    assert by_pool["cpu-a"]["phase"] == "Succeeded"
    assert by_pool["nowhere"]["phase"] == "Failed" and by_pool["nowhere"]["reason"] == "Unschedulable"
    assert "didn't match" in by_pool["nowhere"]["message"]
    assert by_pool["nopull"]["phase"] == "Failed" and by_pool["nopull"]["reason"] == "ImagePullBackOff"
    assert "missing.example/trainer:0" in by_pool["nopull"]["message"]
    # the Unschedulable and ImagePullBackOff cases' Jobs are stopped so that they do not hold their pools
    good_jobs = kubectl.get_json("jobs", "-l", "trainbench.dev/run=good")["items"]
    pools_with_jobs = [j["metadata"]["labels"]["trainbench.dev/pool"] for j in good_jobs]
    assert pools_with_jobs == ["cpu-a"], operator.log()[-5000:]

    # fixing a refused run's spec (a new generation) makes it plan again
    fixed = spec_with(matrix__models=["tiny-qwen3"], suspend=True)
    kubectl.apply(manifest("unknown-model", fixed))
    st = wait_for(
        lambda: (s := kubectl.get_json("br", "unknown-model").get("status") or {}).get("phase") == "Suspended" and s,
        60,
        "the fixed run to plan (suspended: launches nothing)",
        on_fail=operator.log,
    )
    assert st["observedGeneration"] == 2 and st["total"] == 1

    slow = wait_for(
        lambda: (s := kubectl.get_json("br", "slow").get("status") or {}).get("resultsConfigMap") and s,
        120,
        "the slow run to time out",
        on_fail=operator.log,
    )
    assert slow["phase"] == "Failed" and slow["cases"][0]["reason"] == "Timeout"
    assert "deadline" in slow["cases"][0]["message"]
