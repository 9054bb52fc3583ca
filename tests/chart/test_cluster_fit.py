"""Issue 16, the chart's part: what a real GPU cluster with kube-prometheus-stack needs from the rendered chart.

Rendered by the real Helm engine (helm-python-sdk); trainer pods come from the operator's own builders
(operator/kube.py), labelled as the Job controller labels them.
"""

from __future__ import annotations

import json
import py_compile
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from trainbench.operator import kube as K
from trainbench.operator.api import SpecError, parse_spec
from trainbench.operator.controller import reconcile
from trainbench.operator.controller.runner import pod_defaults
from trainbench.operator.plan import plan

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trainbench"
CRD_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")
SUITE = {"schedule": "0 2 * * *", "pools": ["h100"], "spec": {"matrix": {"models": ["qwen3-0.6b"]}}}


def selects(selector: dict, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels and matchExpressions, ANDed) against an object's labels, with the
    semantics of k8s.io/apimachinery's LabelSelectorAsSelector: NotIn and DoesNotExist match an absent key."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_the_selector_evaluator_can_fail():
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "i", "operator": "NotIn", "values": ["1"]}]}
    assert selects(sel, {"a": "1"}) and selects(sel, {"a": "1", "i": "0"})
    assert not selects(sel, {"a": "1", "i": "1"}) and not selects(sel, {"a": "2"})


# --- kube-prometheus-stack picks up every Prometheus Operator object ---------------------------------------------


def _kps_selectors(release: str) -> dict:
    """kube-prometheus-stack's Prometheus with its chart defaults (serviceMonitorSelectorNilUsesHelmValues etc.
    true): each selector is `matchLabels: {release: <kps release>}`, namespaces unrestricted."""
    sel = {"matchLabels": {"release": release}}
    return {"ServiceMonitor": sel, "PodMonitor": sel, "PrometheusRule": sel}


def test_release_label_selects_every_prometheus_operator_object(render):
    docs = render({"prometheusOperator": {"enabled": True, "labels": {"release": "kps"}}})
    kps = _kps_selectors("kps")
    for kind in CRD_KINDS:
        obj = docs.one(kind)
        assert selects(kps[kind], obj["metadata"]["labels"]), f"kps does not select {kind} {obj['metadata']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "trainbench"
    # without the knob kps selects nothing (the silent failure), and NOTES say so
    plain = render({"prometheusOperator": {"enabled": True}})
    assert not any(selects(kps[k], plain.one(k)["metadata"]["labels"]) for k in CRD_KINDS)


def test_per_object_labels_merge_with_the_common_ones(render, chart):
    values = {
        "prometheusOperator": {
            "enabled": True,
            "labels": {"release": "kps", "team": "ml"},
            "prometheusRule": {"labels": {"release": "kps-rules", "role": "alert-rules"}},
        }
    }
    docs = render(values)
    assert docs.one("ServiceMonitor")["metadata"]["labels"]["release"] == "kps"
    assert docs.one("PodMonitor")["metadata"]["labels"]["team"] == "ml"
    rule = docs.one("PrometheusRule")["metadata"]["labels"]
    assert rule["release"] == "kps-rules" and rule["role"] == "alert-rules" and rule["team"] == "ml"
    notes = chart.render({"prometheusOperator": {"enabled": True}}, name="t", namespace="t")
    assert "prometheusOperator.labels is empty" in notes["trainbench/templates/NOTES.txt"]
    notes = chart.render(values, name="t", namespace="t")
    assert "prometheusOperator.labels is empty" not in notes["trainbench/templates/NOTES.txt"]


# --- the PodMonitor scrapes rank 0 only --------------------------------------------------------------------------


def _pods_of(workload: dict) -> list[dict]:
    """The pods the Job controller makes from a Job (or a JobSet's replicated Job): the template's metadata, with
    batch.kubernetes.io/job-completion-index as label (Kubernetes >= 1.28) and annotation on Indexed Jobs."""
    spec = workload["spec"]
    if workload["kind"] == "JobSet":
        spec = spec["replicatedJobs"][0]["template"]["spec"]
    pods = []
    for index in range(spec.get("completions") or 1):
        meta = json.loads(json.dumps(spec["template"]["metadata"]))
        if spec.get("completionMode") == "Indexed":
            meta["labels"][K.L_JOB_INDEX] = str(index)
            meta["annotations"][K.L_JOB_INDEX] = str(index)
        pods.append({"metadata": meta, "spec": spec["template"]["spec"]})
    return pods


def _relabel_keeps(endpoint: dict, pod: dict, with_label: bool = True) -> bool:
    """The endpoint's `keep` relabelings against Prometheus's Kubernetes SD meta labels of the pod (regexes are
    fully anchored, as Prometheus anchors them)."""
    meta = {}
    for k, v in (pod["metadata"].get("annotations") or {}).items():
        meta["__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", k)] = v
    for rule in endpoint.get("relabelings") or []:
        assert rule["action"] == "keep"
        value = rule.get("separator", ";").join(meta.get(s, "") for s in rule["sourceLabels"])
        if not re.fullmatch(rule.get("regex", "(.*)"), value):
            return False
    return True


@pytest.mark.parametrize("engine", ["Job", "JobSet"])
def test_podmonitor_selects_rank0_pods_only(render, engine):
    pm = render({"prometheusOperator": {"enabled": True}}).one("PodMonitor")
    selector, (endpoint,) = pm["spec"]["selector"], pm["spec"]["podMetricsEndpoints"]
    pools = [
        {"name": "one", "gpusPerNode": 8, "nodes": 1},
        {"name": "four", "gpusPerNode": 8, "nodes": 4},
        {"name": "max", "gpusPerNode": 1, "nodes": 64},  # the API's largest pool
    ]
    spec = {"pools": pools, "matrix": {"models": ["tiny-qwen3"]}, "multiNode": {"engine": engine}}
    run = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "r", "uid": "u"}}
    run["spec"] = spec
    seen = {}
    for case in plan(parse_spec(spec)):
        build = K.build_jobset if case.nodes > 1 and engine == "JobSet" else K.build_job
        pods = _pods_of(build(run, case, namespace="bench"))
        assert len(pods) == case.nodes
        for pod in pods:
            assert pod["spec"]["containers"][0]["ports"][0]["name"] == endpoint["port"]  # every rank declares it
            picked = selects(selector, pod["metadata"]["labels"]) and _relabel_keeps(endpoint, pod)
            assert picked == K.is_rank0(pod), (case.pool, pod["metadata"]["labels"].get(K.L_JOB_INDEX))
            # Kubernetes 1.27: no index label, only the annotation; the relabeling alone drops ranks >= 1
            old = json.loads(json.dumps(pod))
            old["metadata"]["labels"].pop(K.L_JOB_INDEX, None)
            assert (selects(selector, old["metadata"]["labels"]) and _relabel_keeps(endpoint, old)) == K.is_rank0(pod)
        seen[case.pool] = sum(K.is_rank0(p) for p in pods)
    assert seen == {"one": 1, "four": 1, "max": 1}
    # the selector is the PodMonitor CRD's: a wrong key or operator would select nothing or everything
    assert selector["matchLabels"] == {"app.kubernetes.io/name": "trainbench", "app.kubernetes.io/component": "case"}


# --- images --------------------------------------------------------------------------------------------------------


def _pool_images(docs) -> dict[str, str]:
    (cm,) = [d for d in docs.kinds("ConfigMap") if "suite.yaml" in d.get("data", {})]
    return {p["name"]: p["image"] for p in yaml.safe_load(cm["data"]["suite.yaml"])["spec"]["pools"]}


def test_rocm_pools_get_the_rocm_image(render):
    values = {
        "pools": {"amd": {"resourceName": "amd.com/gpu", "gpusPerNode": 1}, "nv": {"gpusPerNode": 1}},
        "suites": {"n": {**SUITE, "pools": ["mi300x", "strix-halo", "amd", "nv", "h100"]}},
    }
    images = _pool_images(render(values))
    assert images == {
        "mi300x": "ghcr.io/trainbench/trainer-rocm:0.1.0",
        "strix-halo": "ghcr.io/trainbench/trainer-rocm:0.1.0",
        "amd": "ghcr.io/trainbench/trainer-rocm:0.1.0",  # no family, no image: by resourceName
        "nv": "ghcr.io/trainbench/trainer-cuda-hopper:0.1.0",
        "h100": "ghcr.io/trainbench/trainer-cuda-hopper:0.1.0",
    }


def test_image_tags_and_digests(render, chart):
    digest = "sha256:" + "0123456789abcdef" * 4
    values = {
        "image": {
            "tag": "1.2.3",
            "digest": digest,
            "families": {
                "rocm": "trainer-rocm:7.0",  # rendered .../trainer-rocm:7.0:0.1.0 before
                "cuda-hopper": f"trainer-cuda-hopper@{digest}",
                "cuda-blackwell": {"name": "trainer-cuda-blackwell", "tag": "b1", "registry": "mirror.example/tb"},
                "cuda-ampere": "registry.example:5000/ml/trainer-ampere:2.0",
            },
        },
        "suites": {"n": {**SUITE, "pools": ["mi300x", "h100", "b200", "a6000"]}},
    }
    docs = render(values)
    assert _pool_images(docs) == {
        "mi300x": "ghcr.io/trainbench/trainer-rocm:7.0",
        "h100": f"ghcr.io/trainbench/trainer-cuda-hopper:1.2.3@{digest}",
        "b200": "mirror.example/tb/trainer-cuda-blackwell:b1",
        "a6000": "registry.example:5000/ml/trainer-ampere:2.0",
    }
    operator_image = f"ghcr.io/trainbench/operator:1.2.3@{digest}"
    assert docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == operator_image
    cron = docs.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cron["image"] == operator_image
    assert docs.one("Pod")["spec"]["containers"][0]["image"] == operator_image  # the helm test pod
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmValuesError, match="/image/digest"):
        chart.render({"image": {"digest": "sha256:short"}}, name="t", namespace="t")
    with pytest.raises(helm.HelmValuesError, match="/image/families/rocm"):
        chart.render({"image": {"families": {"rocm": {"tag": "7.0"}}}}, name="t", namespace="t")


# --- trainer pods: imagePullSecrets and the rest reach the Jobs ----------------------------------------------------


def _env(docs) -> dict[str, str]:
    return {
        e["name"]: e.get("value") for e in docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }


def test_private_registry_pull_secrets_reach_the_operator(render, chart):
    """A private registry: the operator, the CronJobs and the helm test pull with imagePullSecrets; the trainer
    pods' settings go to the operator as TRAINBENCH_TRAINER_POD_DEFAULTS, which the operator reads (runner) and
    puts into every case's Job, under a run's and a pool's spec.podTemplate."""
    values = {
        "imagePullSecrets": [{"name": "regcred"}],
        "trainerPods": {
            "priorityClassName": "benchmarks",
            "runtimeClassName": "nvidia",
            "env": [{"name": "NCCL_IB_HCA", "value": "mlx5"}],
            "resources": {"limits": {"rdma/rdma_shared_device_a": 1}},
            "annotations": {"team": "ml"},
        },
        "suites": {"n": SUITE},
    }
    docs = render(values)
    env = _env(docs)
    defaults = json.loads(env["TRAINBENCH_TRAINER_POD_DEFAULTS"])
    assert defaults["imagePullSecrets"] == [{"name": "regcred"}]  # the chart's secret serves the trainer images too
    assert defaults["runtimeClassName"] == "nvidia" and defaults["resources"]["limits"]["rdma/rdma_shared_device_a"]
    assert docs.one("Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert docs.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "regcred"}
    ]
    assert docs.one("Pod")["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    # a trainer-only secret wins for the trainer pods
    own = render({**values, "trainerPods": {"imagePullSecrets": [{"name": "trainer-registry"}]}})
    assert json.loads(_env(own)["TRAINBENCH_TRAINER_POD_DEFAULTS"])["imagePullSecrets"] == [
        {"name": "trainer-registry"}
    ]
    # applied today: annotations, through the operator's existing TRAINBENCH_TRAINER_POD_ANNOTATIONS
    annotations = json.loads(env["TRAINBENCH_TRAINER_POD_ANNOTATIONS"])
    assert annotations["team"] == "ml" and annotations["prometheus.io/scrape"] == "true"
    spec = {"pools": [{"name": "p"}], "matrix": {"models": ["tiny-qwen3"]}}
    run = {"metadata": {"name": "r", "uid": "u"}, "spec": spec}
    job = K.build_job(run, plan(spec)[0], namespace="bench", pod=K.PodSettings(pod_annotations=annotations))
    assert job["spec"]["template"]["metadata"]["annotations"]["team"] == "ml"
    # the Jobs: the rendered defaults as the operator reads them, through the reconciler's launch
    defaults = pod_defaults(env["TRAINBENCH_TRAINER_POD_DEFAULTS"])
    parsed = parse_spec({**spec, "pools": [{"name": "p", "podTemplate": {"priorityClassName": "nightly"}}]})
    out = reconcile.reconcile(
        {**run, "metadata": {**run["metadata"], "namespace": "bench"}},
        parsed,
        plan(parsed),
        reconcile.Observed(),
        now=datetime.now(timezone.utc),
        namespace="bench",
        pod_annotations=annotations,
        pod_defaults=defaults,
    )
    (job,) = [o for o in out.create if o["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]  # the private registry's secret is on the trainer pods
    assert pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "nightly"  # the pool's wins
    container = pod["containers"][0]
    assert {"name": "NCCL_IB_HCA", "value": "mlx5"} in container["env"]
    assert container["resources"]["limits"]["rdma/rdma_shared_device_a"] == "1"
    notes = chart.render(values, name="t", namespace="t")["trainbench/templates/NOTES.txt"]
    assert "not applied" not in notes and "Trainer pods get the trainerPods defaults" in notes
    # nothing set: no variable, no note
    assert "TRAINBENCH_TRAINER_POD_DEFAULTS" not in _env(render())
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmValuesError, match="/trainerPods/imagePullSecrets/0"):
        chart.render({"trainerPods": {"imagePullSecrets": ["regcred"]}}, name="t", namespace="t")


# --- render-time checks of the suites ------------------------------------------------------------------------------


def _parser_message(spec: dict) -> str:
    with pytest.raises(SpecError) as err:
        plan(spec)
    return str(err.value)


@pytest.mark.parametrize(
    ("matrix", "field"),
    [
        ({"models": ["qwen3-0.6b", "gpt-17"]}, "spec.matrix.models[1]"),
        ({"models": ["qwen3-0.6b"], "include": [{"model": "llama-9"}]}, "spec.matrix.include[0].model"),
    ],
)
def test_unknown_model_fails_the_render_with_the_parsers_message(chart, matrix, field):
    helm = pytest.importorskip("helm_python")
    spec = {"pools": [{"name": "h100"}], "matrix": matrix}
    message = _parser_message(spec)
    assert message.startswith(field + ": unknown model")
    with pytest.raises(helm.HelmRenderError) as err:
        chart.render({"suites": {"nightly": {**SUITE, "spec": {"matrix": matrix}}}}, name="t", namespace="t")
    assert f"suite nightly: {message}" in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("suite", "where", "what"),
    [
        ({"spec": {"matrix": {"models": ["qwen3-0.6b"], "seqLen": [4096]}}}, "/suites/n/spec/matrix", "'seqLen'"),
        ({"spec": {"matrix": {"models": ["qwen3-0.6b"], "types": ["sft-ful"]}}}, "/suites/n/spec/matrix/types/0", ""),
        ({"spec": {"matrix": {"models": ["qwen3-0.6b"]}, "stepz": 3}}, "/suites/n/spec", "'stepz'"),
        ({"spec": {"matrix": {"models": ["qwen3-0.6b"]}, "steps": 0}}, "/suites/n/spec/steps", ""),
        ({"pools": [{"name": "h100", "gpusPerNode": 17}]}, "/suites/n/pools/0", ""),
    ],
)
def test_suite_specs_are_checked_against_the_api_schema(chart, suite, where, what):
    """A suite's spec and pool overrides follow the CRD generated from operator/api.py: the render fails with the
    offending path, as the API server would refuse the run at night."""
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render({"suites": {"n": {**SUITE, **suite}}}, name="t", namespace="t")
    assert f"at '{where}'" in str(err.value) and what in str(err.value), str(err.value)


def test_known_model_spellings_render(render):
    """What the registry resolves (names, Hugging Face names, any case) renders; the parser agrees."""
    models = ["qwen3-0.6b", "Qwen/Qwen3-0.6B", "TINY-QWEN3", "meta-llama/Llama-3.2-1B"]
    docs = render({"suites": {"n": {**SUITE, "spec": {"matrix": {"models": models}}}}})
    (cm,) = [d for d in docs.kinds("ConfigMap") if "suite.yaml" in d.get("data", {})]
    assert plan(yaml.safe_load(cm["data"]["suite.yaml"])["spec"])


def test_the_registry_template_is_generated_from_the_trainer_registry():
    from trainbench.trainer.specs import list_models

    text = (CHART / "templates" / "_registry.tpl").read_text()
    data = json.loads(text.split("\n")[2])
    assert set(list_models()) <= set(data["models"])
    assert data["unknownModel"] % ("spec.matrix.models[0]", "'x'") == _parser_message(
        {"pools": [{"name": "p"}], "matrix": {"models": ["x"]}}
    )


# --- run history limits ---------------------------------------------------------------------------------------------


def _submit_args(docs) -> dict[str, list[str]]:
    return {
        d["metadata"]["labels"]["trainbench.dev/suite"]: d["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        for d in docs.kinds("CronJob")
    }


def test_run_history_limits_reach_trainbench_submit(render):
    from trainbench.operator import submit

    values = {
        "suiteDefaults": {"successfulRunsHistoryLimit": 5, "failedRunsHistoryLimit": 2},
        "suites": {
            "a": SUITE,
            "b": {**SUITE, "successfulRunsHistoryLimit": 1, "failedRunsHistoryLimit": 0},
            "c": {**SUITE, "successfulRunsHistoryLimit": None, "failedRunsHistoryLimit": None},
        },
    }
    args = _submit_args(render(values))
    assert args["a"][-2:] == ["--keep-succeeded=5", "--keep-failed=2"]
    assert args["b"][-2:] == ["--keep-succeeded=1", "--keep-failed=0"]
    assert not [a for a in args["c"] if a.startswith("--keep")]
    defaults = _submit_args(render({"suites": {"a": SUITE}}))["a"]
    assert defaults[-2:] == ["--keep-succeeded=30", "--keep-failed=10"]
    for cron_args in args.values():  # the operator image's `trainbench submit` takes them as they are
        assert submit.main([*cron_args[1:], "--dry-run", "--now", "2026-01-01T02:00:00+00:00"]) in (0, 2)


def test_run_history_limits_are_validated(chart):
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmValuesError, match="successfulRunsHistoryLimit"):
        chart.render({"suites": {"a": {**SUITE, "successfulRunsHistoryLimit": 0}}}, name="t", namespace="t")
    with pytest.raises(helm.HelmValuesError, match="failedRunsHistoryLimit"):
        chart.render({"suiteDefaults": {"failedRunsHistoryLimit": -1}}, name="t", namespace="t")


# --- helm test -------------------------------------------------------------------------------------------------------


def test_helm_test_manifests_render(render):
    kv = pytest.importorskip("kubernetes_validate")
    values = {"suites": {"n": {**SUITE, "pools": [{"name": "mi300x", "gpusPerNode": 2}, "h100"]}}}
    docs = render(values)
    hooks = [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    assert sorted(d["kind"] for d in hooks) == ["Pod", "Role", "RoleBinding", "ServiceAccount"]
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in hooks}
    assert weights["ServiceAccount"] < weights["RoleBinding"] < weights["Pod"]  # RBAC exists before the pod
    for d in hooks:
        kv.validate(d, "1.30.0", strict=True)
    pod = docs.one("Pod")
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python", "-c"]
    compiled = Path(py_compile.compile(str(CHART / "files" / "helm-test.py"), doraise=True))
    assert compiled.exists() and c["args"][0] == (CHART / "files" / "helm-test.py").read_text()
    env = {e["name"]: e["value"] for e in c["env"]}
    run = json.loads(env["TRAINBENCH_TEST_RUN"])
    assert run["metadata"]["namespace"] == "trainbench" and run["metadata"]["name"] == "trainbench-test"
    (case,) = plan(parse_spec(run["spec"]))  # the operator's parser and planner accept it: one tiny case
    assert (case.model, case.type, case.gpus, run["spec"]["steps"]) == ("tiny-qwen3", "sft-full", 1, 1)
    (pool,) = run["spec"]["pools"]
    assert pool["name"] == "mi300x" and pool["image"].endswith("/trainer-rocm:0.1.0")  # the first suite's first pool
    role = docs.one("Role", "trainbench-test")
    assert {v for r in role["rules"] for v in r["verbs"]} == {"create", "get", "delete"}
    # no suites: the first pool by name; test.pool picks one; test.enabled false renders nothing
    run = json.loads(
        {e["name"]: e["value"] for e in render().one("Pod")["spec"]["containers"][0]["env"]}["TRAINBENCH_TEST_RUN"]
    )
    assert run["spec"]["pools"][0]["name"] == "a6000"
    chosen = render({"test": {"pool": "b200"}}).one("Pod")["spec"]["containers"][0]["env"]
    assert json.loads(chosen[0]["value"])["spec"]["pools"][0]["name"] == "b200"
    assert not render({"test": {"enabled": False}}).kinds("Pod")


def test_notes_show_how_to_read_a_report(chart):
    notes = chart.render({}, name="tb", namespace="bench")["trainbench/templates/NOTES.txt"]
    assert "kubectl -n bench get br" in notes
    assert "kubectl -n bench get configmap NAME-report -o jsonpath='{.data.report\\.md}'" in notes
    assert "trainbench report configmap/NAME-results -n bench" in notes
    assert "helm test tb -n bench" in notes
