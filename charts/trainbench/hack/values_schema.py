"""Generate ../values.schema.json (the chart's values schema).

python charts/trainbench/hack/values_schema.py          # rewrite values.schema.json
python charts/trainbench/hack/values_schema.py --check  # exit 1 when it is out of date
"""

import json
import sys
from pathlib import Path

from generated import write_or_check  # charts/trainbench/hack/generated.py

OUT = Path(__file__).resolve().parents[1] / "values.schema.json"
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
dns_subdomain = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
compile_cache = {
    "type": "object",
    "additionalProperties": False,
    "required": ["persistentVolumeClaim"],
    "description": "torch.compile cache volume of the pool's trainer pods (BenchmarkRun spec.pools[].compileCache)",
    "properties": {
        "persistentVolumeClaim": {
            "type": "object",
            "additionalProperties": False,
            "required": ["claimName"],
            "properties": {
                "claimName": {
                    "type": "string",
                    "pattern": dns_subdomain,
                    "maxLength": 253,
                    "description": "an existing PersistentVolumeClaim in the suite's namespace",
                }
            },
        }
    },
}
pool_fields = {
    "hardware": {"type": "string", "description": "display name in reports, e.g. H100 HBM3"},
    "family": {"type": "string", "description": "trainer image family: a key of image.families"},
    "image": {"type": "string", "minLength": 1, "description": "full trainer image reference (wins over family)"},
    "resourceName": {
        "type": "string",
        "pattern": "^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9._]*[a-z0-9])?$",
        "description": "extended resource name, e.g. nvidia.com/gpu or amd.com/gpu",
    },
    "gpusPerNode": {"type": "integer", "minimum": 1, "maximum": 16},
    "nodes": {"type": "integer", "minimum": 1, "maximum": 64},
    "peakTFLOPs": {
        "type": "number",
        "exclusiveMinimum": 0,
        "description": "peak dense bf16 TFLOP/s per GPU (MFU denominator)",
    },
    "pricePerGPUHour": {"type": "number", "minimum": 0, "description": "USD per GPU-hour (the report's $/Mtok)"},
    "maxConcurrent": {"type": "integer", "minimum": 1},
    "cpu": {"type": "string"},
    "memory": {"type": "string"},
    "nodeSelector": strmap,
    "tolerations": {"type": "array", "items": toleration},
    "compileCache": compile_cache,
}
pool = {
    "type": "object",
    "additionalProperties": False,
    "properties": pool_fields,
    "anyOf": [{"required": ["family"]}, {"required": ["image"]}],
    "description": "a GPU pool preset (BenchmarkRun pool fields plus family)",
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
        "pools": {"type": "array", "minItems": 1, "items": pool_ref},
        "spec": {
            "type": "object",
            "required": ["matrix"],
            "description": "the BenchmarkRun spec without pools and suite (the chart fills them)",
            "properties": {
                "matrix": {
                    "type": "object",
                    "required": ["models"],
                    "properties": {"models": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
                },
                "pools": {"not": {}, "description": "set pools on the suite, not in spec"},
                "suite": {"not": {}, "description": "the suite name is the key under suites"},
            },
        },
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
                "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                "operator": {"type": "string", "minLength": 1},
                "families": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
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
                "backoffLimit": {"type": "integer", "minimum": 0},
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
                        k: {"enum": ["info", "warning", "critical"]} for k in ("regression", "failure", "missing")
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
text = json.dumps(schema, indent=2) + "\n"
sys.exit(write_or_check({OUT: text}, sys.argv[1:], "charts/trainbench/hack/values_schema.py"))
