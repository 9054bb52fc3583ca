"""Every CEL rule of the CRD holds for the default values of the fields it reads (cel-python, no server): the check
a real API server makes when the CRD is created (a field's `default` must pass the rules of its own schema, before
any nested default is applied), and the object that defaulting makes of a minimal run. Kubernetes 1.36 refused the
CRD with HTTP 422 when the rule of spec.baseline read `self.source` from the default `{}`; this test would have
caught that without a server."""

from __future__ import annotations

import copy

import celpy
import pytest
from kubesim import apply_defaults, cel_errors  # tests/operator/kubesim (conftest puts it on sys.path)

from trainbench.operator.crd import crd

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
MINIMAL = {"spec": {"pools": [{"name": "a"}], "matrix": {"models": ["qwen3-0.6b"]}}}


def nodes(schema: dict, path: str = ""):
    """(path, schema node) of every node of the schema."""
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


RULED = [(path, node) for path, node in nodes(SCHEMA) if node.get("x-kubernetes-validations")]
DEFAULTED = [(path, node) for path, node in nodes(SCHEMA) if "default" in node]


def test_the_crd_has_rules_and_defaults():
    assert {p for p, _ in RULED} == {
        ".spec",
        ".spec.matrix",
        ".spec.baseline",
        ".spec.pools[].resourceName",
        ".spec.pools[].nodeSelector",
        ".spec.pools[].tolerations[]",
    }
    assert len(DEFAULTED) >= 40


@pytest.mark.parametrize(("path", "node"), DEFAULTED, ids=[p for p, _ in DEFAULTED])
def test_each_default_passes_the_rules_of_its_field(path, node):
    """As the API server checks a CRD: the default as written (nested defaults not applied) against every rule of
    the field's schema and of the schemas inside it."""
    errors = cel_errors(copy.deepcopy(node["default"]), node, path, celpy.Environment())
    assert errors == [], f"{path}: default {node['default']!r} breaks {errors}"


@pytest.mark.parametrize(("path", "node"), RULED, ids=[p for p, _ in RULED])
def test_each_rule_holds_on_the_defaults_of_a_minimal_run(path, node):
    """The rules read fields that have defaults (batchSize, microBatch, matrix.include, baseline.source): on a
    minimal run, defaulted as the server does it, every rule evaluates (no missing key) and holds."""
    obj = apply_defaults(copy.deepcopy(MINIMAL), SCHEMA)
    values = [obj]
    for key in path.strip(".").split("."):  # `pools[]`: every item of the list (none: nothing to check)
        name, items = key.removesuffix("[]"), key.endswith("[]")
        values = [v for value in values for v in (value[name] if items else [value[name]])]
    env = celpy.Environment()
    for value in values:
        for rule in node["x-kubernetes-validations"]:
            result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(value)})
            assert bool(result) is True, f"{path}: {rule['rule']} -> {result!r}"


def test_a_rule_that_reads_an_absent_default_is_caught():
    """The check above fails on the rule Kubernetes refused: without has(), `self.source` is no such key in {}."""
    baseline = copy.deepcopy(SCHEMA["properties"]["spec"]["properties"]["baseline"])
    baseline["x-kubernetes-validations"][0]["rule"] = "self.source != 'configMap' || has(self.configMap)"
    errors = cel_errors(copy.deepcopy(baseline["default"]), baseline, ".spec.baseline", celpy.Environment())
    assert errors and "source" in errors[0][1], errors
