"""The BenchmarkRun CustomResourceDefinition, generated from the API types in `api.py`.

    trainbench crd      # print the CRD (also: python -m trainbench.operator.crd, trainbench operator --print-crd)

`charts/trainbench/hack/crd.py` writes it to manifests/crd.yaml and the chart's crds/ (tests check both copies).
The schema is pydantic's JSON schema of `api.BenchmarkRun`, turned into a Kubernetes structural schema: `$ref`s
inlined, nullable fields as plain optional ones, `exclusiveMinimum` in its OpenAPI v3.0 (boolean) form, default
factories evaluated (a nested object's default is `{}`: the API server fills in its fields' own defaults).
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault

from trainbench.operator.api import GROUP, KIND, PLURAL, PRINTER_COLUMNS, VERSION, BenchmarkRun

HEADER = (
    "# The BenchmarkRun API (trainbench.dev/v1alpha1), generated from operator/api.py by operator/crd.py. Do not edit:\n"
    "# change api.py and run `python charts/trainbench/hack/crd.py`. `kubectl explain benchmarkrun.spec` shows these\n"
    "# descriptions.\n"
)

# the order of keys in each schema node of the YAML: these first, then the other bounds, then the nested schemas
_KEY_ORDER = ("type", "format", "description", "default", "required", "enum", "minimum", "exclusiveMinimum", "maximum")
_NESTED = ("x-kubernetes-validations", "additionalProperties", "items", "properties")
_DROPPED = ("title", "additionalProperties")


class _SchemaGenerator(GenerateJsonSchema):
    """pydantic's JSON schema with default factories evaluated (a model instance becomes `{}`)."""

    def get_default_value(self, schema):
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()
            return {} if isinstance(value, BaseModel) else value
        return super().get_default_value(schema)


def _structural(node: Any, defs: dict) -> Any:
    """One JSON-schema node as a Kubernetes structural-schema node."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:  # the referenced model, with the field's own keys (description, default) on top
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    options = node.pop("anyOf", None)
    if options is not None:  # `X | None`: an optional X
        real = [o for o in options if o != {"type": "null"}]
        if len(real) != 1:
            raise ValueError(f"a CRD field cannot be one of several types: {options}")
        node = {**real[0], **node} if "$ref" not in real[0] else {**_structural(real[0], defs), **node}
        if node.get("default", NoDefault) is None:
            del node["default"]
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if node.get("type") == "object" and node.get("additionalProperties") not in (None, True, False):
        node["additionalProperties"] = _structural(node["additionalProperties"], defs)
        dropped = ("title",)
    else:
        dropped = _DROPPED
    out = {}
    for key in sorted(node, key=_key_rank):
        if key in dropped:
            continue
        value = node[key]
        if key == "properties":
            value = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            value = _structural(value, defs)
        elif key == "description":  # docstrings are wrapped: one line each
            value = " ".join(value.split())
        out[key] = value
    return out


def _key_rank(key: str) -> tuple[int, int]:
    if key in _KEY_ORDER:
        return (0, _KEY_ORDER.index(key))
    return (2, _NESTED.index(key)) if key in _NESTED else (1, 0)


def openapi_schema() -> dict:
    """The CRD's openAPIV3Schema of a BenchmarkRun."""
    schema = BenchmarkRun.model_json_schema(by_alias=True, schema_generator=_SchemaGenerator)
    return _structural(schema, schema.pop("$defs", {}))


def crd() -> dict:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "trainbench", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["br"],
                "categories": ["trainbench"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML file that is shipped (manifests/crd.yaml, the chart's crds/)."""
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    if argv:
        print("usage: trainbench crd   (prints the BenchmarkRun CRD; takes no arguments)", file=sys.stderr)
        return 2
    sys.stdout.write(crd_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
