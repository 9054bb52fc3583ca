"""Generate ../values.schema.json (the chart's values schema) and ../templates/_registry.tpl (the model registry).

python charts/trainbench/hack/values_schema.py          # rewrite both
python charts/trainbench/hack/values_schema.py --check  # exit 1 when one is out of date

A suite's `spec` and the pool fields are the BenchmarkRun schema of the CRD generated from operator/api.py
(operator/crd.py), closed to unknown fields, so a typo or a bad enum fails `helm install` with its path.
_registry.tpl holds the names the trainer's model registry (trainbench.trainer.specs) resolves and the message the
operator's parser gives for any other name, so `helm install`/`helm template` refuses a suite naming an unknown
model with the operator's own words, instead of the CronJob failing at night.
"""

import json
import sys
from pathlib import Path

from generated import write_or_check  # charts/trainbench/hack/generated.py

from trainbench.operator.api import SpecError
from trainbench.operator.crd import openapi_schema
from trainbench.trainer import specs

OUT = Path(__file__).resolve().parents[1] / "values.schema.json"
REGISTRY = Path(__file__).resolve().parents[1] / "templates" / "_registry.tpl"
dns = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
qty = {"type": ["string", "number"], "pattern": r"^[0-9.]+([eEinumkKMGTP]*[-+]?[0-9]*)?$"}
resources = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": qty},
        "limits": {"type": "object", "additionalProperties": qty},
        "claims": {"type": "array"},
    },
}
strmap = {"type": "object", "additionalProperties": {"type": "string"}}
toleration = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string"},
        "operator": {"enum": ["Exists", "Equal"]},
        "value": {"type": "string"},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute", ""]},
        "tolerationSeconds": {"type": "integer"},
    },
}
duration = {
    "type": "string",
    "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$",
    "description": "a Prometheus duration such as 30s or 1m",
}
digest = {"type": "string", "pattern": "^(sha256:[a-f0-9]{64})?$"}
family_image = {
    "oneOf": [
        {"type": "string", "minLength": 1, "description": "name, name:tag, name@sha256:..., or a full reference"},
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "tag": {"type": "string"},
                "digest": digest,
                "registry": {"type": "string", "minLength": 1},
            },
        },
    ]
}
dns_subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _values_schema(node):
    """The CRD's structural OpenAPI v3 schema as a JSON schema that refuses unknown fields: no x-kubernetes-* rules
    (the API server's CEL; the operator's parser checks the same), OpenAPI 3.0's boolean exclusiveMinimum as a
    number, and additionalProperties false on every object with properties (the API server prunes them)."""
    if isinstance(node, list):
        return [_values_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _values_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "format"}
    if out.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    elif out.get("exclusiveMinimum") is False:
        del out["exclusiveMinimum"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_pool_fields() -> dict:
    """The BenchmarkRun pool fields of the CRD generated from operator/api.py (operator/crd.py), less `name` (the key
    under pools), plus the chart's `family`."""
    crd_pool = _values_schema(openapi_schema()["properties"]["spec"]["properties"]["pools"]["items"])
    fields = {k: v for k, v in crd_pool["properties"].items() if k != "name"}
    fields["family"] = {"type": "string", "description": "trainer image family: a key of image.families"}
    return fields


pool_fields = crd_pool_fields()


pool = {
    "type": "object",
    "additionalProperties": False,
    "properties": pool_fields,
    "description": "a GPU pool preset (BenchmarkRun pool fields plus family; without both family and image the "
    "family follows resourceName through image.familyByResource)",
}
pool_ref = {
    "oneOf": [
        {"type": "string", "pattern": dns, "description": "a pool name from .Values.pools"},
        {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": dns}, **{k: v for k, v in pool_fields.items()}},
        },
    ]
}
run_history = {
    "successfulRunsHistoryLimit": {
        "type": ["integer", "null"],
        "minimum": 1,
        "description": "Succeeded BenchmarkRuns of the suite to keep (null: all); the newest is the next baseline",
    },
    "failedRunsHistoryLimit": {
        "type": ["integer", "null"],
        "minimum": 0,
        "description": "Failed and PartiallyFailed BenchmarkRuns of the suite to keep (null: all)",
    },
}


def suite_spec() -> dict:
    """A suite's `spec`: the BenchmarkRun spec schema of the CRD generated from operator/api.py (operator/crd.py),
    without pools and suite, which the chart fills. Types, enums, bounds and unknown fields fail `helm install`."""
    spec = _values_schema(openapi_schema()["properties"]["spec"])
    spec["description"] = "the BenchmarkRun spec without pools and suite (the chart fills them)"
    spec["required"] = ["matrix"]
    spec["properties"]["pools"] = {"not": {}, "description": "set pools on the suite, not in spec"}
    spec["properties"]["suite"] = {"not": {}, "description": "the suite name is the key under suites"}
    return spec


cron = "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\\S+\\s+){4}\\S+)$"
suite = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schedule", "pools", "spec"],
    "properties": {
        "enabled": {"type": "boolean"},
        "schedule": {"type": "string", "pattern": cron, "description": "cron schedule, e.g. '0 2 * * *'"},
        "timeZone": {"type": "string", "minLength": 1},
        "suspend": {"type": "boolean"},
        "namePrefix": {"type": "string", "pattern": dns, "maxLength": 40},
        "namespace": {"type": "string", "pattern": dns, "maxLength": 63},
        "runMissingAfterHours": {"type": "integer", "minimum": 1},
        "startingDeadlineSeconds": {"type": "integer", "minimum": 10},
        "successfulJobsHistoryLimit": {"type": "integer", "minimum": 0},
        "failedJobsHistoryLimit": {"type": "integer", "minimum": 0},
        **run_history,
        "pools": {"type": "array", "minItems": 1, "items": pool_ref},
        "spec": suite_spec(),
    },
}
schema = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "title": "trainbench chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": {"type": "object"},
        "nameOverride": {"type": "string"},
        "fullnameOverride": {"type": "string", "maxLength": 40},
        "commonLabels": strmap,
        "image": {
            "type": "object",
            "additionalProperties": False,
            "required": ["registry", "operator", "families"],
            "properties": {
                "registry": {"type": "string", "minLength": 1},
                "tag": {"type": "string"},
                "digest": {**digest, "description": "sha256 digest of the operator image (pull by digest)"},
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "operator": {"type": "string", "minLength": 1},
                "families": {"type": "object", "additionalProperties": family_image},
                "familyByResource": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "minLength": 1},
                    "description": "resourceName -> family, for pools that name neither family nor image",
                },
            },
        },
        "imagePullSecrets": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
        "operator": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "watch": {
                    "enum": ["namespaced", "cluster"],
                    "description": "namespaced: Roles in watched namespaces; cluster: a ClusterRole",
                },
                "namespaces": {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": dns, "maxLength": 63},
                },
                "logFormat": {"enum": ["json", "plain"]},
                "verbose": {"type": "boolean"},
                "metricsPort": {"type": "integer", "minimum": 1024, "maximum": 65535},
                "livenessPort": {"type": "integer", "minimum": 1024, "maximum": 65535},
                "extraArgs": {"type": "array", "items": {"type": "string"}},
                "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "resources": resources,
                "podAnnotations": strmap,
                "podLabels": strmap,
                "nodeSelector": strmap,
                "tolerations": {"type": "array", "items": toleration},
                "affinity": {"type": "object"},
                "priorityClassName": {"type": "string"},
                "podSecurityContext": {"type": "object"},
                "securityContext": {"type": "object"},
            },
        },
        "serviceAccount": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"create": {"type": "boolean"}, "name": {"type": "string"}, "annotations": strmap},
        },
        "rbac": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"create": {"type": "boolean"}, "crdDiscovery": {"type": "boolean"}},
        },
        "pools": {"type": "object", "propertyNames": {"pattern": dns, "maxLength": 30}, "additionalProperties": pool},
        "trainerPods": {
            "type": "object",
            "additionalProperties": False,
            "description": "what every trainer pod gets; only annotations are applied today (API pod overrides pending)",
            "properties": {
                "imagePullSecrets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {"name": {"type": "string", "pattern": dns_subdomain}},
                    },
                },
                "serviceAccountName": {"type": "string", "pattern": "^(" + dns_subdomain[1:-1] + ")?$"},
                "priorityClassName": {"type": "string"},
                "runtimeClassName": {"type": "string"},
                "affinity": {"type": "object"},
                "labels": strmap,
                "annotations": strmap,
                "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "resources": resources,
                "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "volumeMounts": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name", "mountPath"]},
                },
            },
        },
        "compileCache": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "create": {"type": "boolean", "description": "make a PersistentVolumeClaim for torch.compile's caches"},
                "name": {
                    "type": "string",
                    "pattern": "^(" + dns_subdomain[1:-1] + ")?$",
                    "maxLength": 253,
                    "description": "the claim's name; default <fullname>-compile-cache",
                },
                "allPools": {
                    "type": "boolean",
                    "description": "every suite pool without its own compileCache uses the chart's claim",
                },
                "size": {**qty, "description": "requested storage, e.g. 50Gi"},
                "storageClassName": {"type": "string", "description": "empty: the cluster's default StorageClass"},
                "accessModes": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]},
                    "description": "writable modes only: torch writes the cache as it compiles",
                },
                "annotations": strmap,
            },
        },
        "suites": {"type": "object", "propertyNames": {"pattern": dns, "maxLength": 30}, "additionalProperties": suite},
        "suiteDefaults": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "timeZone": {"type": "string"},
                "startingDeadlineSeconds": {"type": "integer", "minimum": 10},
                "successfulJobsHistoryLimit": {"type": "integer", "minimum": 0},
                "failedJobsHistoryLimit": {"type": "integer", "minimum": 0},
                **run_history,
                "backoffLimit": {"type": "integer", "minimum": 0},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "resources": resources,
            },
        },
        "test": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean", "description": "render the `helm test` Pod"},
                "pool": {"type": "string", "pattern": "^(" + dns[1:-1] + ")?$", "description": "a key of pools"},
                "timeoutSeconds": {"type": "integer", "minimum": 60},
                "resources": resources,
            },
        },
        "metrics": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "service": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "annotations": strmap,
                    },
                },
                "scrapeAnnotations": {"type": "boolean"},
                "trainerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
        },
        "prometheusOperator": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "labels": {
                    **strmap,
                    "description": "labels on every ServiceMonitor, PodMonitor and PrometheusRule, e.g. "
                    "{release: kps} for kube-prometheus-stack's default selectors",
                },
                "serviceMonitor": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"enabled": {"type": "boolean"}, "interval": duration, "labels": strmap},
                },
                "podMonitor": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"enabled": {"type": "boolean"}, "interval": duration, "labels": strmap},
                },
                "prometheusRule": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"enabled": {"type": "boolean"}, "labels": strmap},
                },
            },
        },
        "alerts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "runMissingAfterHours": {"type": "integer", "minimum": 1},
                "lookbackHours": {"type": "integer", "minimum": 1},
                "severity": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        k: {"enum": ["info", "warning", "critical"]} for k in ("regression", "failure", "missing", "changePoint")
                    },
                },
            },
        },
        "dashboards": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "labels": strmap,
                "annotations": strmap,
                "folder": {"type": "string"},
            },
        },
        "publish": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "existingSecret": {"type": "string", "description": "Secret with the operator's git token"},
                "tokenKey": {"type": "string", "minLength": 1},
                "usernameKey": {"type": "string", "minLength": 1},
                "secretNames": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                    "description": "Secrets runs may name in spec.publish.secretRef (the operator may get these only)",
                },
                "reportUrlTemplate": {"type": "string", "pattern": "^(https?://.+)?$"},
            },
        },
        "webhook": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "pattern": "^(https?://.+)?$",
                    "description": "http(s) URL of a Slack-compatible incoming webhook",
                },
                "existingSecret": {"type": "string"},
                "existingSecretKey": {"type": "string", "minLength": 1},
            },
        },
    },
}


def registry_tpl() -> str:
    """Accepted model names (the registry's names and its Hugging Face names, normalised as resolve_model does)
    and the parser's message for an unknown one, as a printf format of (field, quoted name)."""
    names = set()
    for cfg in specs._shipped().values():
        names |= {cfg["_name"], specs._normalise(cfg["_hf_name"])}
    sentinel = "ZZ-SENTINEL-ZZ"
    try:
        specs.resolve_model(sentinel)
    except specs.UnknownModelError as e:
        message = str(SpecError("%s", str(e).replace("%", "%%").replace(repr(sentinel), "%s")))
    else:
        raise SystemExit(f"the registry resolves {sentinel!r}")
    data = {"models": sorted(names), "unknownModel": message}
    return (
        "{{/* Generated by charts/trainbench/hack/values_schema.py from trainbench.trainer.specs. Do not edit. */}}\n"
        '{{- define "trainbench.registry" -}}\n' + json.dumps(data, indent=None) + "\n{{- end -}}\n"
    )


schema["properties"]["suites"]["additionalProperties"]["properties"]["spec"]["properties"]["matrix"]["properties"][
    "models"
]["items"]["examples"] = specs.list_models()
text = json.dumps(schema, indent=2) + "\n"
files = {OUT: text, REGISTRY: registry_tpl()}
sys.exit(write_or_check(files, sys.argv[1:], "charts/trainbench/hack/values_schema.py"))
