"""The Helm chart, rendered by the real Helm engine, validated against the Kubernetes OpenAPI schemas."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainbench.operator.api import parse_spec
from trainbench.operator.plan import plan
from trainbench.trainer.hardware import peak_flops

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trainbench"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "trainbench"


def ci_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


KUBE_VERSION = "1.30.0"  # the oldest Kubernetes the chart's kubeVersion (>=1.27) is tested against here
# Prometheus Operator kinds: kubernetes-validate ships only the core OpenAPI schemas; these are validated with
# the pydantic models generated from the prometheus-operator CRDs (PyPI cloudcoil-models-prometheus-operator)
# and the rules by promtool (test_rules.py).
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def validate_prometheus_operator_object(doc: dict) -> None:
    """Types, enums and patterns from the CRD; fields the models do not know (typos) fail the round trip."""
    models = pytest.importorskip("cloudcoil.models.prometheus_operator.v1")
    model = getattr(models, doc["kind"]).model_validate(doc)
    assert model.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc, f"unknown fields in {doc['kind']}"


MODES = [None, *CI_VALUES]
MODE_IDS = ["defaults", *[p.name.removesuffix("-values.yaml") for p in CI_VALUES]]


def _values(mode) -> dict:
    return ci_values(mode) if mode else {}


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_every_object_validates_against_the_kubernetes_schema(render, mode):
    kv = pytest.importorskip("kubernetes_validate")
    docs = render(_values(mode))
    assert docs.kinds("Deployment") and docs.kinds("ServiceAccount")
    checked = 0
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            validate_prometheus_operator_object(doc)
            continue
        kv.validate(doc, KUBE_VERSION, strict=True)  # raises ValidationError naming the bad field
        checked += 1
    assert checked >= 5


def test_the_validator_can_fail(render):
    """Guard against a validator that accepts anything: a broken Deployment must be refused."""
    kv = pytest.importorskip("kubernetes_validate")
    bad = copy.deepcopy(render().one("Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)
    bad = copy.deepcopy(render().one("Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)


def test_helm_lint_is_clean(chart):
    helm = pytest.importorskip("helm_python")
    for mode in MODES:
        report = helm.lint(str(CHART), _values(mode), strict=True)
        errors = [m for m in report["messages"] if m["severity"] >= 2]
        assert not errors and not report["errors"], (mode, report)


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_labels_and_namespaces(render, mode):
    for doc in render(_values(mode)):
        labels = doc["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version"):
            assert labels.get(key), f"{doc['kind']}/{doc['metadata']['name']} lacks label {key}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "trainbench"
        if not doc["kind"].startswith("Cluster"):
            assert doc["metadata"].get("namespace"), f"{doc['kind']}/{doc['metadata']['name']} has no namespace"


def _rules(docs, kind):
    return [(d["metadata"].get("namespace"), d["metadata"]["name"], r) for d in docs.kinds(kind) for r in d["rules"]]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_rbac_is_least_privilege(render, mode):
    docs = render(_values(mode))
    for kind in ("Role", "ClusterRole"):
        for _ns, name, rule in _rules(docs, kind):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"{kind} {name} has a wildcard in {key}"
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), (name, rule)
            assert "secrets" not in rule["resources"], f"{kind} {name} may read secrets"
    cluster_roles = {d["metadata"]["name"]: d for d in docs.kinds("ClusterRole")}
    reader = cluster_roles.pop("trainbench-crd-reader")
    nodes = cluster_roles.pop("trainbench-node-reader")  # can any node ever run a pod that waits (read-only)
    assert nodes["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]
    assert reader["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    watch = _values(mode).get("operator", {}).get("watch", "namespaced")
    operator_rules = [
        r for d in docs.kinds("Role") + docs.kinds("ClusterRole") for r in d["rules"] if "jobs" in r["resources"]
    ]
    assert operator_rules, "no rule lets the operator create Jobs"
    # JobSets (spec.multiNode.engine JobSet): exactly the verbs the operator uses, in JobSet's group only
    jobset_rules = [
        r for d in docs.kinds("Role") + docs.kinds("ClusterRole") for r in d["rules"] if "jobsets" in r["resources"]
    ]
    assert jobset_rules and all(
        r
        == {
            "apiGroups": ["jobset.x-k8s.io"],
            "resources": ["jobsets"],
            "verbs": ["get", "list", "watch", "create", "delete"],
        }
        for r in jobset_rules
    ), jobset_rules
    if watch == "cluster":
        assert set(cluster_roles) == {"trainbench-operator"}
        assert not [d for d in docs.kinds("Role") if d["metadata"]["name"] == "trainbench-operator"]
    else:
        assert not cluster_roles, f"namespaced mode renders cluster roles {list(cluster_roles)}"
        expected = {NAMESPACE, *_values(mode).get("operator", {}).get("namespaces", [])}
        role_ns = {
            d["metadata"]["namespace"] for d in docs.kinds("Role") if d["metadata"]["name"] == "trainbench-operator"
        }
        bound_ns = {
            d["metadata"]["namespace"]
            for d in docs.kinds("RoleBinding")
            if d["metadata"]["name"] == "trainbench-operator"
        }
        assert role_ns == bound_ns == expected
        args = docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        assert sorted(a.split("=", 1)[1] for a in args if a.startswith("--namespace=")) == sorted(expected)


def test_operator_deployment(render):
    dep = render().one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][0] == "operator" and "--log-format=json" in c["args"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["image"] == "ghcr.io/trainbench/operator:0.1.0"
    assert pod["serviceAccountName"] == "trainbench"
    env = {e["name"]: e for e in c["env"]}
    assert json.loads(env["TRAINBENCH_TRAINER_POD_ANNOTATIONS"]["value"])["prometheus.io/scrape"] == "true"
    assert "TRAINBENCH_WEBHOOK_URL" not in env
    svc = render().one("Service")
    assert svc["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_prometheus_operator_switch(render):
    on = render({"prometheusOperator": {"enabled": True}})
    for kind in CRD_KINDS:
        on.one(kind)
    svc = on.one("Service")
    assert "prometheus.io/scrape" not in (svc["metadata"].get("annotations") or {})
    env = {e["name"]: e for e in on.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["TRAINBENCH_TRAINER_POD_ANNOTATIONS"]["value"]) == {}
    sm, pm = on.one("ServiceMonitor"), on.one("PodMonitor")
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"]
    assert pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "case"
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    off = render()
    assert not [d for d in off if d["kind"] in CRD_KINDS]
    # the CRD validation can fail: a bad interval and an unknown field are refused
    pydantic = pytest.importorskip("pydantic")
    bad = copy.deepcopy(sm)
    bad["spec"]["endpoints"][0]["interval"] = "often"
    with pytest.raises(pydantic.ValidationError):
        validate_prometheus_operator_object(bad)
    bad = copy.deepcopy(pm)
    bad["spec"]["podMetricsEndpoint"] = bad["spec"].pop("podMetricsEndpoints")
    with pytest.raises(AssertionError, match="unknown fields"):
        validate_prometheus_operator_object(bad)


def test_webhook_secret(render):
    docs = render(ci_values(CHART / "ci" / "cluster-wide-values.yaml"))
    secret = docs.one("Secret")
    env = {e["name"]: e for e in docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["TRAINBENCH_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    docs = render(ci_values(CHART / "ci" / "namespaces-values.yaml"))
    assert not docs.kinds("Secret")
    env = {e["name"]: e for e in docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRAINBENCH_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-webhook", "key": "slack-url"}


def test_publish_credentials_and_report_link(render):
    """Publishing (spec.publish): the operator's git token from a Secret, and get on exactly the Secrets runs
    may name in spec.publish.secretRef (no blanket access to Secrets); nothing of it by default."""
    values = {
        "publish": {
            "existingSecret": "git-bot",
            "secretNames": ["git-bot", "team-token"],
            "reportUrlTemplate": "https://git.example/bench/blob/{branch}/{file}",
        }
    }
    docs = render(values)
    env = {e["name"]: e for e in docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRAINBENCH_GIT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "git-bot", "key": "token"}
    assert env["TRAINBENCH_GIT_USERNAME"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert env["TRAINBENCH_REPORT_URL_TEMPLATE"]["value"].startswith("https://git.example/")
    rules = [r for d in docs.kinds("Role") + docs.kinds("ClusterRole") for r in d.get("rules") or []]
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    assert secret_rules and all(r["resourceNames"] == ["git-bot", "team-token"] for r in secret_rules)
    assert all(r["verbs"] == ["get"] for r in secret_rules)
    plain = render({})
    env = {e["name"] for e in plain.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not {"TRAINBENCH_GIT_TOKEN", "TRAINBENCH_REPORT_URL_TEMPLATE"} & env
    assert not [
        r
        for d in plain.kinds("Role") + plain.kinds("ClusterRole")
        for r in d.get("rules") or []
        if "secrets" in r["resources"]
    ]
    with pytest.raises(Exception, match="reportUrlTemplate|pattern"):
        render({"publish": {"reportUrlTemplate": "ftp://x"}})


def _suite_runs(docs) -> dict[str, dict]:
    return {
        d["metadata"]["labels"]["trainbench.dev/suite"]: yaml.safe_load(d["data"]["suite.yaml"])
        for d in docs.kinds("ConfigMap")
        if "suite.yaml" in d.get("data", {})
    }


def test_suites_become_cronjobs(render):
    values = ci_values(CHART / "ci" / "nightly-values.yaml")
    docs = render(values)
    enabled = {n for n, s in values["suites"].items() if s.get("enabled", True)}
    crons = {d["metadata"]["labels"]["trainbench.dev/suite"]: d for d in docs.kinds("CronJob")}
    assert set(crons) == enabled == set(_suite_runs(docs))
    for name, cron in crons.items():
        spec = cron["spec"]
        assert spec["schedule"] == values["suites"][name]["schedule"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "trainbench-submitter"
        (c,) = pod["containers"]
        assert c["args"][:2] == ["submit", "/etc/trainbench/suite/suite.yaml"]
        assert f"--name-prefix={values['suites'][name].get('namePrefix', name)}" in c["args"]
        assert c["volumeMounts"][0]["mountPath"] == "/etc/trainbench/suite"
    # the submitter may create BenchmarkRuns and nothing else
    (role,) = [d for d in docs.kinds("Role") if d["metadata"]["name"] == "trainbench-submitter"]
    # (list + delete: the run history limits, `trainbench submit --keep-succeeded/--keep-failed`)
    assert role["rules"] == [
        {"apiGroups": ["trainbench.dev"], "resources": ["benchmarkruns"], "verbs": ["create", "list", "delete"]}
    ]
    binding = [d for d in docs.kinds("RoleBinding") if d["metadata"]["name"] == "trainbench-submitter"]
    assert binding[0]["subjects"][0]["name"] == "trainbench-submitter"


@pytest.mark.parametrize("mode", [p for p in CI_VALUES if ci_values(p).get("suites")], ids=lambda p: p.name)
def test_suite_templates_are_valid_benchmark_runs(render, mode):
    docs = render(ci_values(mode))
    crd_path = ROOT / "manifests" / "crd.yaml"
    for name, run in _suite_runs(docs).items():
        assert run["apiVersion"] == "trainbench.dev/v1alpha1" and run["kind"] == "BenchmarkRun"
        assert run["spec"]["suite"] == name and run["metadata"]["labels"]["trainbench.dev/suite"] == name
        spec = parse_spec(run["spec"])  # the operator's own parser refuses anything the operator would
        assert plan(spec)
        if crd_path.exists():
            jsonschema = pytest.importorskip("jsonschema")
            crd = yaml.safe_load(crd_path.read_text())
            (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
            # OpenAPI v3 schemas of CRDs use draft-4 semantics (boolean exclusiveMinimum)
            jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"]).validate(run)


def test_pool_presets(chart):
    values = chart.values
    families = values["image"]["families"]
    images = {p.parent.name for p in (ROOT / "images").glob("*/Dockerfile")}
    for name, pool in values["pools"].items():
        assert pool["family"] in families, name
        assert families[pool["family"]] in images, f"pool {name}: no images/{families[pool['family']]}/Dockerfile"
        assert pool["resourceName"] in ("nvidia.com/gpu", "amd.com/gpu")
        assert pool["nodeSelector"] and pool["tolerations"]
        # the preset's peak agrees with the trainer's table for the hardware it names
        assert peak_flops(pool["hardware"]) == pytest.approx(pool["peakTFLOPs"] * 1e12), name
    assert {"h100", "h200", "b200", "a6000", "mi300x"} <= set(values["pools"])


SUITE = {"schedule": "0 2 * * *", "pools": ["h100"], "spec": {"matrix": {"models": ["qwen3-0.6b"]}}}
BAD_VALUES = [
    ({"operator": {"watch": "everywhere"}}, "/operator/watch"),
    ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    ({"suites": {"Nightly": SUITE}}, "Nightly"),
    ({"suites": {"n": {**SUITE, "schedule": "every night"}}}, "/suites/n/schedule"),
    ({"suites": {"n": {**SUITE, "pools": []}}}, "/suites/n/pools"),
    ({"suites": {"n": {k: v for k, v in SUITE.items() if k != "schedule"}}}, "schedule"),
    ({"suites": {"n": {**SUITE, "spec": {"pools": [], "matrix": {"models": ["x"]}}}}}, "/suites/n/spec/pools"),
    ({"pools": {"h100": {"gpusPerNode": 0}}}, "/pools/h100/gpusPerNode"),
    ({"pools": {"x": {"hardwar": "X"}}}, "/pools/x"),
    ({"prometheusOperator": {"serviceMonitor": {"interval": "often"}}}, "/prometheusOperator/serviceMonitor/interval"),
    ({"webhook": {"url": "slack"}}, "/webhook/url"),
    (
        {"pools": {"h100": {"compileCache": {"persistentVolumeClaim": {"claimName": "Cache_1"}}}}},
        "/pools/h100/compileCache/persistentVolumeClaim/claimName",
    ),
    ({"pools": {"h100": {"compileCache": {"emptyDir": {}}}}}, "/pools/h100/compileCache"),
    ({"compileCache": {"accessModes": ["ReadOnlyMany"]}}, "/compileCache/accessModes/0"),
    ({"compileCache": {"size": "lots"}}, "/compileCache/size"),
    ({"compileCache": {"name": "Compile Cache"}}, "/compileCache/name"),
    ({"typo": True}, "typo"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_refuses_bad_values_with_a_clear_message(chart, values, where):
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmValuesError) as err:
        chart.render(values, name="t", namespace="t")
    assert where in str(err.value), str(err.value)


def test_schema_accepts_every_ci_values_file(chart):
    for mode in CI_VALUES:
        chart.validate_schema(ci_values(mode))


def test_unknown_suite_pool_is_refused(chart):
    helm = pytest.importorskip("helm_python")
    with pytest.raises(helm.HelmRenderError, match='suite pool "tpu" is not defined'):
        chart.render({"suites": {"n": {**SUITE, "pools": ["tpu"]}}}, name="t", namespace="t")


def test_dashboards_are_generated_and_shipped(render):
    gen = subprocess.run(
        [sys.executable, str(CHART / "hack" / "dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert gen.returncode == 0, gen.stderr
    cm = render().one("ConfigMap", "trainbench-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert sorted(cm["data"]) == files and len(files) >= 2
    for name in files:
        board = json.loads(cm["data"][name])
        assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "model", "pool", "suite"}
        assert len(board["panels"]) > 5


def test_crds_are_generated_from_the_api_types():
    """The chart's crds/ and manifests/crd.yaml are operator/crd.py's output (hack/crd.py writes both)."""
    assert [p.name for p in sorted((CHART / "crds").glob("*.yaml"))] == ["benchmarkruns.trainbench.dev.yaml"]
    gen = subprocess.run([sys.executable, str(CHART / "hack" / "crd.py"), "--check"], capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr + gen.stdout


def test_manifests_equal_the_default_render():
    gen = subprocess.run(
        [sys.executable, str(CHART / "hack" / "manifests.py"), "--check"], capture_output=True, text=True
    )
    assert gen.returncode == 0, gen.stderr + gen.stdout
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (ROOT / "manifests" / resource).exists(), resource
    assert "crd.yaml" in kustomization["resources"]


def test_kubectl_kustomize_builds_the_manifests(tmp_path):
    kubectl = Path("/usr/bin/kubectl")
    if not kubectl.exists():
        pytest.skip("kubectl (Debian package) is not installed; `make tools` installs it")
    if not (ROOT / "manifests" / "crd.yaml").exists():
        pytest.fail("manifests/crd.yaml (the operator's CRD, written by the operator part) is missing")
    out = subprocess.run([str(kubectl), "kustomize", str(ROOT / "manifests")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert {"Namespace", "CustomResourceDefinition", "Deployment", "ServiceAccount", "Role"} <= set(kinds)


def test_values_schema_is_generated():
    gen = subprocess.run(
        [sys.executable, str(CHART / "hack" / "values_schema.py"), "--check"], capture_output=True, text=True
    )
    assert gen.returncode == 0, gen.stderr


def test_dashboard_panels_are_well_formed():
    from trainbench.trainer import contract

    known = {v for k, v in vars(contract).items() if k.startswith(("M_", "OM_")) and isinstance(v, str)}
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        cells = set()
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] + g["w"] <= 24, (path.name, p["title"])
            area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not area & cells, f"{path.name}: panel {p['title']!r} overlaps another"
            cells |= area
            if p["type"] == "row":
                continue
            assert p["datasource"]["uid"] == "${datasource}"
            assert p["targets"], p["title"]
            for t in p["targets"]:
                used = set(re.findall(r"trainbench_\w+", t["expr"]))
                assert used and used <= known, f"{path.name} / {p['title']}: unknown metric(s) {used - known}"


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_operator_args_parse_with_the_operator_cli(render, mode):
    """The Deployment's arguments are accepted by `trainbench operator` (operator/controller/runner.py) as they are."""
    from trainbench.operator.controller import runner

    docs = render(_values(mode))
    args = docs.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator"
    parsed = runner.parse_args(args[1:])
    assert parsed.log_format == "json" and parsed.metrics_port == 8080 and parsed.liveness_port == 8081
    if _values(mode).get("operator", {}).get("watch") == "cluster":
        assert parsed.all_namespaces and not parsed.namespace
    else:
        assert not parsed.all_namespaces and NAMESPACE in parsed.namespace
    for cron in docs.kinds("CronJob"):
        sub = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert sub[0] == "submit" and sub[1].startswith("/etc/trainbench/suite/")


def test_notes_name_the_suites_cronjobs(chart):
    values = ci_values(CHART / "ci" / "nightly-values.yaml")
    notes = chart.render(values, name="trainbench", namespace=NAMESPACE)["trainbench/templates/NOTES.txt"]
    assert "kubectl -n trainbench create job --from=cronjob/trainbench-suite-nightly nightly-manual" in notes
    assert "disabled" not in notes  # a disabled suite has no CronJob
    assert "ServiceMonitor, PodMonitor and PrometheusRule created" in notes


# --- the torch.compile cache (compileCache, pools.<name>.compileCache) ---------------------------------------------


def _suite_pools(docs) -> dict[str, dict[str, dict]]:
    return {suite: {p["name"]: p for p in run["spec"]["pools"]} for suite, run in _suite_runs(docs).items()}


def test_compile_cache_is_off_by_default(render):
    docs = render(ci_values(CHART / "ci" / "namespaces-values.yaml"))
    assert not docs.kinds("PersistentVolumeClaim")
    values = ci_values(CHART / "ci" / "nightly-values.yaml")
    values.pop("compileCache")
    for pools in _suite_pools(render(values)).values():
        assert all("compileCache" not in p for p in pools.values())


def test_compile_cache_claim_is_made_and_used_by_the_suites(render):
    """compileCache.create: one PVC per suite namespace, valid for Kubernetes; every suite pool without its own
    cache names it, a preset's own claim wins, and the operator renders the mount from the suite's BenchmarkRun."""
    from trainbench.operator import kube as K

    kv = pytest.importorskip("kubernetes_validate")
    values = ci_values(CHART / "ci" / "nightly-values.yaml")
    values["compileCache"] = {
        "create": True,
        "size": "200Gi",
        "storageClassName": "nfs-client",
        "annotations": {"helm.sh/resource-policy": "keep"},
    }
    values["suites"]["weekly-moe"]["namespace"] = "moe"
    values["pools"] = {"h200": {"compileCache": {"persistentVolumeClaim": {"claimName": "h200-local-cache"}}}}
    docs = render(values)
    pvcs = docs.kinds("PersistentVolumeClaim")
    assert sorted(d["metadata"]["namespace"] for d in pvcs) == ["moe", NAMESPACE]
    for pvc in pvcs:
        kv.validate(pvc, KUBE_VERSION, strict=True)
        assert pvc["metadata"]["name"] == "trainbench-compile-cache"
        assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert pvc["spec"] == {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "nfs-client",
            "resources": {"requests": {"storage": "200Gi"}},
        }
    pools = _suite_pools(docs)
    chart_claim = {"persistentVolumeClaim": {"claimName": "trainbench-compile-cache"}}
    assert pools["nightly"]["h100"]["compileCache"] == pools["nightly"]["a6000"]["compileCache"] == chart_claim
    assert pools["weekly-moe"]["h200"]["compileCache"]["persistentVolumeClaim"]["claimName"] == "h200-local-cache"
    run = _suite_runs(docs)["nightly"]
    spec = parse_spec(run["spec"])
    case = plan(spec)[0]
    pool = next(p for p in spec.pools if p.name == case.pool)
    claim = pool.compile_cache.persistent_volume_claim.claim_name
    job = K.build_job(
        {**run, "metadata": {"name": "nightly-1", "uid": "u"}},
        case,
        namespace=NAMESPACE,
        pod=K.PodSettings(compile_cache_claim=claim),
    )
    kv.validate(job, KUBE_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert {"name": K.COMPILE_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": "trainbench-compile-cache"}} in pod[
        "volumes"
    ]


def test_compile_cache_pools_opt_in_when_not_all_pools(render):
    values = ci_values(CHART / "ci" / "nightly-values.yaml")
    values["compileCache"] = {
        "create": True,
        "allPools": False,
        "name": "torch-cache",
        "accessModes": ["ReadWriteOnce"],
    }
    values["suites"]["nightly"]["pools"] = [
        "h100",
        {"name": "a6000", "compileCache": {"persistentVolumeClaim": {"claimName": "torch-cache"}}},
    ]
    docs = render(values)
    (pvc,) = docs.kinds("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "torch-cache" and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in pvc["spec"]  # the cluster's default StorageClass
    pools = _suite_pools(docs)["nightly"]
    assert "compileCache" not in pools["h100"]
    assert pools["a6000"]["compileCache"]["persistentVolumeClaim"]["claimName"] == "torch-cache"
