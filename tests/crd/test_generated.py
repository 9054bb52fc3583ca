"""The CRD is generated from the API types (operator/api.py -> operator/crd.py): the shipped copies are its output
(tests/chart checks them with hack/crd.py --check; here through `trainbench crd`), every field carries a
description, and the schema is the one pydantic validates with (fields, defaults, enums)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trainbench.operator import api
from trainbench.operator.crd import crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_trainbench_crd_prints_the_shipped_copies():
    out = subprocess.run([sys.executable, "-m", "trainbench.cli", "crd"], capture_output=True, text=True, check=True)
    assert out.stdout == crd_yaml()
    for copy in (
        ROOT / "manifests" / "crd.yaml",
        ROOT / "charts" / "trainbench" / "crds" / "benchmarkruns.trainbench.dev.yaml",
    ):
        assert copy.read_text() == out.stdout, f"{copy} is stale: python charts/trainbench/hack/crd.py"


def _fields(schema: dict, path: str):
    for name, sub in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", sub
        yield from _fields(sub, f"{path}.{name}")
        if isinstance(sub.get("items"), dict):
            yield from _fields(sub["items"], f"{path}.{name}[]")


def test_every_field_has_a_description():
    missing = [p for p, node in _fields(SCHEMA, "") if not node.get("description") and p != ".metadata"]
    assert not missing, f"fields without a description (an attribute docstring in operator/api.py): {missing}"


def test_the_schema_is_structural():
    """No pydantic-only keywords survive: every node has a type, no $ref/anyOf/title, boolean exclusiveMinimum."""

    def walk(node, path):
        assert "type" in node or node.get("x-kubernetes-int-or-string") is True, path  # int-or-string: no type
        for key in ("$ref", "anyOf", "allOf", "oneOf", "title", "const"):
            assert key not in node, f"{path}: {key}"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}{'[]' if key == 'items' else '{}'}")

    walk(SCHEMA, "")


def test_defaults_are_the_api_defaults():
    """The minimal spec, defaulted by the schema, is the object pydantic builds (checked on the real server too)."""
    spec = SCHEMA["properties"]["spec"]
    model = api.BenchmarkRunSpec.model_validate({"pools": [{"name": "a"}], "matrix": {"models": ["m"]}})
    assert spec["properties"]["steps"]["default"] == model.steps
    assert spec["properties"]["matrix"]["properties"]["attn"]["items"]["enum"] == list(api.ATTN_BACKENDS)
    assert spec["properties"]["baseline"]["default"] == {} and spec["properties"]["lora"]["default"] == {}
