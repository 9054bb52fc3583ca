"""The shipped CRD on a real Kubernetes CRD API server (apiextensions-apiserver 1.36 + etcd, crd_server.py): it
installs, every example is admitted and stored with the API types' defaults, every bad-input case of the suite is
refused or admitted exactly as the emulator (tests/operator/kubesim) does it and on the same field, `kubectl get br`
columns come from the Table API, the status subresource is separate, and unknown fields are refused under
fieldValidation=Strict (kubectl's default)."""

from __future__ import annotations

import copy
import importlib.util
import uuid
from pathlib import Path

import pytest
import yaml
from cases import GOOD, UNKNOWN_FIELDS, run
from crd_server import TABLE, start_server
from kubesim import SchemaValidator

from trainbench.operator import api

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS_CRD = ROOT / "manifests" / "crd.yaml"
CHART_CRD = ROOT / "charts" / "trainbench" / "crds" / "benchmarkruns.trainbench.dev.yaml"
CRD = yaml.safe_load(MANIFESTS_CRD.read_text())
BASE = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/default/{api.PLURAL}"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "manifests" / "examples").glob("*.yaml"))


def suite_module(name: str):
    """A test module of the operator suite (tests/operator/**/NAME.py), loaded for its case lists."""
    (path,) = sorted((ROOT / "tests" / "operator").glob(f"**/{name}.py"))
    spec = importlib.util.spec_from_file_location(f"crd_cases_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_admission(server, obj: dict, strict: bool = True) -> tuple[bool, list[str], dict]:
    """Create `obj` on the real server: (admitted, the fields a refusal names, the stored object or Status)."""
    query = "?fieldValidation=Strict" if strict else ""
    r = server.request("POST", BASE + query, obj)
    body = r.json()
    if r.status_code == 201:
        server.request("DELETE", f"{BASE}/{obj['metadata']['name']}")
        return True, [], body
    assert r.status_code in (400, 422), body
    fields = [c["field"] for c in (body.get("details") or {}).get("causes") or [] if c.get("field") != "<nil>"]
    if r.status_code == 400:  # strict decoding: `unknown field "spec.stepz"` (no causes)
        fields = [part.split('"')[1] for part in body["message"].split("unknown field ")[1:]]
    return False, fields, body


def sim_admission(obj: dict, strict: bool = True) -> tuple[bool, list[str]]:
    validator = SchemaValidator(CRD)
    errors = validator.unknown_fields(obj) if strict else []
    errors = errors or validator.admit(copy.deepcopy(obj))
    return not errors, [path for path, _ in errors]


# --- the CRD as shipped --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [MANIFESTS_CRD, CHART_CRD], ids=["manifests", "chart"])
def test_the_shipped_crd_installs(tmp_path, path):
    server = start_server(tmp_path / "server")
    try:
        installed = server.install_crd(yaml.safe_load(path.read_text()))
        assert installed["status"]["acceptedNames"]["shortNames"] == ["br"]
    finally:
        server.stop()


def test_the_crd_is_refused_when_a_default_breaks_a_rule(tmp_path, crd_server):
    """What 1.36 refused (HTTP 422): the CEL rule of spec.baseline read `self.source`, absent from its default {}."""
    crd = copy.deepcopy(CRD)
    crd["metadata"]["name"] = "brokenruns.trainbench.dev"
    crd["spec"]["names"] = {"kind": "BrokenRun", "plural": "brokenruns", "singular": "brokenrun"}
    baseline = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["baseline"]
    baseline["x-kubernetes-validations"][0]["rule"] = "self.source != 'configMap' || has(self.configMap)"
    with pytest.raises(AssertionError, match=r"422.*baseline\]\.default.*no such key: source"):
        crd_server.install_crd(crd)


# --- examples: admitted, stored with the API types' defaults -------------------------------------------------------


def _chart_suites() -> list[tuple[str, dict]]:
    helm = pytest.importorskip("helm_python")
    chart = helm.Chart.load(str(ROOT / "charts" / "trainbench"))
    values = yaml.safe_load((ROOT / "charts" / "trainbench" / "ci" / "nightly-values.yaml").read_text())
    out = chart.render(values, name="trainbench", namespace="trainbench")
    suites = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "ConfigMap" and "suite.yaml" in (doc.get("data") or {}):
                suites.append((doc["metadata"]["name"], yaml.safe_load(doc["data"]["suite.yaml"])))
    assert suites, "the nightly CI values define suites"
    return suites


def _example_docs() -> list[tuple[str, dict]]:
    docs = [(str(p.relative_to(ROOT)), yaml.safe_load(p.read_text())) for p in EXAMPLES]
    return docs + [(f"chart suite {name}", doc) for name, doc in _chart_suites()]


def test_every_example_is_stored_with_the_api_defaults(crd_server):
    examples = _example_docs()
    assert len(examples) >= 7
    for where, doc in examples:
        obj = run(doc["spec"], name=f"ex-{uuid.uuid4().hex[:8]}")
        r = crd_server.request("POST", BASE + "?fieldValidation=Strict", obj)
        assert r.status_code == 201, f"{where}: {r.json().get('message')}"
        stored = crd_server.request("GET", f"{BASE}/{obj['metadata']['name']}").json()
        # the server's defaults are the API types' defaults: the stored spec is what pydantic builds from the input
        want = api.parse_spec(doc["spec"]).model_dump(by_alias=True, exclude_none=True)
        assert stored["spec"] == want, where
        # ... and what the emulator stores
        emulated = copy.deepcopy(obj)
        assert SchemaValidator(CRD).admit(emulated) == [], where
        assert emulated["spec"] == stored["spec"], where


def test_a_minimal_run_gets_every_default(crd_server):
    obj = run(GOOD)
    r = crd_server.request("POST", BASE, obj)
    assert r.status_code == 201, r.text
    spec = r.json()["spec"]
    assert spec["baseline"] == {"source": "previous"} and spec["multiNode"] == {"engine": "Job"}
    assert spec["pools"][0]["gpusPerNode"] == 1 and spec["matrix"]["seqLens"] == [8192]
    assert spec["generate"]["batchSizes"] == [1, 8, 32, 128] and spec["thresholds"] == {"default": 5}
    assert "status" not in r.json()


# --- bad input: the real server and the emulator agree -------------------------------------------------------------


def _suite_cases() -> list[tuple[str, dict, str | None]]:
    """(name, spec, field the refusal names, or None: admitted) from every refusal list of the operator suite."""
    bad = suite_module("test_bad_input")
    cases = [(f"bad-input/{n}", s, f) for n, s, f in bad.REFUSED_BY_SCHEMA]
    cases += [(f"bad-input/{n}", s, None) for n, s, _ in bad.REFUSED_BY_OPERATOR]  # the schema cannot tell
    cc = suite_module("test_compile_cache")
    for i, (cache, field, _words) in enumerate(cc.BAD):
        spec = {**GOOD, "pools": [{"name": "a", "compileCache": cache}]}
        cases.append((f"compile-cache/bad-{i}", spec, f"spec.pools[0].compileCache|{field}"))
    for name in cc.GOOD_NAMES:
        spec = {**GOOD, "pools": [{"name": "a", "compileCache": {"persistentVolumeClaim": {"claimName": name}}}]}
        cases.append((f"compile-cache/good-{name[:12]}", spec, None))
    cases.append(("jobset/engine", {**GOOD, "multiNode": {"engine": "jobset"}}, "spec.multiNode.engine"))
    return cases + [(f"unknown/{n}", s, f) for n, s, f in UNKNOWN_FIELDS]


def _names(field: str, fields: list[str]) -> bool:
    """Whether a refusal naming `fields` names `field` ("prefix|suffix": a field that starts and ends so)."""
    prefix, _, suffix = field.partition("|")
    return any(f.startswith(prefix) and f.endswith(suffix) or (not suffix and prefix in f) for f in fields)


def test_admission_agrees_with_the_emulator(crd_server):
    """Each case in both field-validation modes: Strict (kubectl's default: unknown fields refused) and without
    (the kubernetes client's: unknown fields pruned). The field a case names is checked in the mode its test uses:
    unknown fields under Strict, the rest after pruning (as SchemaValidator.admit)."""
    cases = _suite_cases()
    assert len(cases) >= 45
    disagreements = []
    for name, spec, field in cases:
        obj = run(spec)
        for strict in (True, False):
            admitted, fields, body = real_admission(crd_server, obj, strict=strict)
            sim_admitted, sim_fields = sim_admission(obj, strict=strict)
            mode = "Strict" if strict else "pruning"
            if admitted != sim_admitted or set(fields) != set(sim_fields):
                disagreements.append(f"{name} ({mode}): real {fields} ({body.get('message')}), emulator {sim_fields}")
            if strict != name.startswith("unknown/"):
                continue
            if admitted != (field is None):
                disagreements.append(f"{name} ({mode}): the real server {'admitted' if admitted else 'refused'} it")
            elif field and not _names(field, fields):
                disagreements.append(f"{name} ({mode}): the refusal names {fields}, not {field}")
    assert not disagreements, "\n".join(disagreements)


@pytest.mark.parametrize(("name", "spec", "field"), UNKNOWN_FIELDS, ids=[c[0] for c in UNKNOWN_FIELDS])
def test_unknown_fields_are_pruned_without_strict(crd_server, name, spec, field):
    obj = run(spec)
    admitted, _, stored = real_admission(crd_server, obj, strict=False)
    sim = copy.deepcopy(obj)
    assert admitted and SchemaValidator(CRD).admit(sim) == []
    assert stored["spec"] == sim["spec"]
    assert SchemaValidator(CRD).unknown_fields(stored) == [], field


# --- printer columns and the status subresource --------------------------------------------------------------------


def test_printer_columns_through_the_table_api(crd_server):
    obj = run(GOOD, name="table-run")
    assert crd_server.request("POST", BASE, obj).status_code == 201
    status = {"phase": "Running", "progress": "1/3", "failed": 1, "regressions": 2}
    r = crd_server.request(
        "PATCH",
        f"{BASE}/table-run/status",
        {"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    table = crd_server.request("GET", f"{BASE}/table-run", headers={"Accept": TABLE}).json()
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name"] + [c["name"] for c in api.PRINTER_COLUMNS]
    (row,) = table["rows"]
    assert row["cells"][:5] == ["table-run", "Running", "1/3", 1, 2]
    assert row["cells"][5].endswith("s")  # Age, e.g. "0s"
    listed = crd_server.request("GET", BASE, headers={"Accept": TABLE}).json()
    assert "table-run" in [r["cells"][0] for r in listed["rows"]]


def test_status_is_a_subresource(crd_server):
    obj = run(GOOD, name="status-run")
    obj["status"] = {"phase": "Succeeded"}
    created = crd_server.request("POST", BASE, obj).json()
    assert "status" not in created  # a create ignores status
    patch = {"spec": {"steps": 7}, "status": {"phase": "Failed"}}
    merge = {"Content-Type": "application/merge-patch+json"}
    r = crd_server.request("PATCH", f"{BASE}/status-run", patch, headers=merge).json()
    assert r["spec"]["steps"] == 7 and "status" not in r  # the main resource ignores status ...
    assert r["metadata"]["generation"] == 2
    r = crd_server.request("PATCH", f"{BASE}/status-run/status", patch, headers=merge).json()
    assert r["status"] == {"phase": "Failed"} and r["spec"]["steps"] == 7  # ... /status ignores spec
    assert r["metadata"]["generation"] == 2  # a status write is not a new generation
    bad_phase = crd_server.request("PATCH", f"{BASE}/status-run/status", {"status": {"phase": "Done"}}, headers=merge)
    assert bad_phase.status_code == 422 and "status.phase" in bad_phase.text
