"""The BenchmarkRun API (trainbench.dev/v1alpha1) as typed Python objects: the one source of the CRD.

`operator/crd.py` generates the CustomResourceDefinition (manifests/crd.yaml, the chart's crds/) from these models:
descriptions, defaults, enums, bounds and the CEL rules (`x-kubernetes-validations`, declared with `cel()` next to
the Python check that mirrors them) are written here once. The same models parse the spec in the operator and in
the local executor, so both refuse bad input with the same messages. Field names are camelCase on the wire
(aliases) and snake_case in Python.
"""

from __future__ import annotations

import re
import reprlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainbench.trainer.contract import (
    AC_MODES,
    ATTN_BACKENDS,
    BENCH_TYPES,
    DEFAULT_LORA_TARGETS,
    GENERATE_BATCH_SIZES,
    GENERATE_NEW_TOKENS,
    VERIFY_SAMPLES,
)

GROUP = "trainbench.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BenchmarkRun"
PLURAL = "benchmarkruns"

BenchType = Literal[BENCH_TYPES]  # type: ignore[valid-type]
AcMode = Literal[AC_MODES]  # type: ignore[valid-type]
AttnBackend = Literal[ATTN_BACKENDS]  # type: ignore[valid-type]

PositiveInt = Annotated[int, Field(ge=1)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
SeqLen = Annotated[int, Field(ge=1, le=1048576)]
Degree = Annotated[int, Field(ge=1, le=1024)]

# a DNS-1123 label (pool names, suites): lowercase alphanumerics and '-', starting and ending alphanumeric
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# an object name that is a DNS-1123 subdomain (PersistentVolumeClaims, ConfigMaps): lowercase alphanumerics,
# '-' and '.', starting and ending alphanumeric, at most 253 characters
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_SUBDOMAIN_MAX = 253
CONFIGMAP_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# Kubernetes' label syntax (apimachinery validation.IsQualifiedName, IsValidLabelValue): a key is an optional
# DNS-subdomain prefix and '/', then a name of at most 63 alphanumerics, '-', '_' and '.', starting and ending
# alphanumeric; a value is such a name or empty
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
_DNS_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL_KEY = rf"^({_DNS_PREFIX}/)?{_LABEL_NAME}$"
LABEL_KEY_MAX = 253 + 1 + 63
LABEL_VALUE = rf"^({_LABEL_NAME})?$"
# an extended resource (IsExtendedResourceName): a domain-qualified name outside kubernetes.io, e.g. nvidia.com/gpu,
# amd.com/gpu; `cpu`, `memory` or an unqualified name would silently drop the GPU request
RESOURCE_NAME = rf"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)+/{_LABEL_NAME}$"
# a CPU quantity above zero (a limit of 0 makes a pod the API server refuses or one that never runs)
CPU_QUANTITY = r"^([1-9][0-9]*(\.[0-9]+)?|0\.[0-9]*[1-9][0-9]*)m?$"
# a memory quantity in MB or more (M, Mi, G, Gi, T, Ti), at least 1M: a pod limit of bytes or KiB cannot run a trainer
MEMORY_QUANTITY = r"^[1-9][0-9]*(\.[0-9]+)?(Mi|Gi|Ti|M|G|T)$"
# an image reference (distribution's grammar, simplified): [registry[:port]/]path[:tag][@digest], no whitespace
IMAGE_REFERENCE = (
    r"^([A-Za-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
IMAGE_REFERENCE_MAX = 512
# free text shown in reports (pool hardware): letters, digits, spaces and a few punctuation marks, no markdown or
# HTML control characters (| < > ` * # [ ] \\ newlines)
DISPLAY_TEXT = r"^[A-Za-z0-9][A-Za-z0-9 ._()/+,:@-]*$"
DISPLAY_TEXT_MAX = 64
# a model name, a Hugging Face id or (local executor only) a path to a config.json: no spaces, quotes, braces, NUL
MODEL_NAME = r"^[A-Za-z0-9._/~-]+$"
MODEL_NAME_MAX = 256
INT64_MAX = 2**63 - 1
MAX_BATCH = 65536  # sequences per optimizer step / per micro-batch
MAX_DECODE_BATCH = 4096  # sequences decoded at once (generate)
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600

INT64 = {"format": "int64"}
SET = {"x-kubernetes-list-type": "set"}  # a list of distinct values (the API server refuses a duplicate)
DATE_TIME = {"format": "date-time"}


def cel(rule: str, message: str, field_path: str | None = None) -> dict:
    """One CEL rule of the CRD (an `x-kubernetes-validations` entry), evaluated by the API server on the object
    whose schema declares it (`self`). Declare rules with `crd_rules(...)` in the model's config."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class RuleError(ValueError):
    """A Python check that mirrors a CEL rule, raised with the rule's fieldPath (".operator"), so that the local
    refusal names the same field as the API server's."""

    def __init__(self, field_path: str, message: str):
        super().__init__(message)
        self.field_path = field_path


def crd_rules(*rules: dict) -> dict:
    """A model's `json_schema_extra` holding its CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


class _Model(BaseModel):
    # strict: a string is never a number or a boolean ("8192", "true"), as on the API server; no inf/NaN (JSON has
    # none); unknown fields are refused (the API server under fieldValidation=Strict, kubectl's default)
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        strict=True,
        allow_inf_nan=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _int64(cls, data: Any) -> Any:
        """Integers beyond int64 are refused as on the API server (its integers are int64)."""
        if isinstance(data, dict):
            for key, value in data.items():
                if isinstance(value, int) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value <= INT64_MAX:
                    raise RuleError(f".{key}", f"{str(value)[:24]}... is out of range (a 64-bit integer)")
        return data


class Toleration(_Model):
    """A core/v1 Toleration, with the rules the API server applies to a pod's tolerations (validated here so that a
    run is refused at admission, not left waiting on a Job whose pods the API server refuses)."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            cel(
                "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                "operator must be Exists when key is empty",
                ".operator",
            ),
            cel(
                "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "value must be empty when operator is Exists",
                ".value",
            ),
            cel(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds requires effect NoExecute",
                ".tolerationSeconds",
            ),
        )
    )
    key: str | None = Field(default=None, pattern=rf"^$|{LABEL_KEY}", max_length=LABEL_KEY_MAX)
    """Taint key to tolerate (a label key); empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal."""
    value: str | None = Field(default=None, pattern=LABEL_VALUE, max_length=63)
    """Taint value to match with operator Equal (a label value)."""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match (NoSchedule, PreferNoSchedule, NoExecute); empty matches all."""
    toleration_seconds: int | None = Field(default=None, json_schema_extra=INT64)
    """With NoExecute, how long the pod stays bound after the taint appears."""

    @model_validator(mode="after")
    def _rules(self):
        if not self.key and self.operator != "Exists":
            raise RuleError(".operator", "operator must be Exists when key is empty")
        if self.operator == "Exists" and self.value:
            raise RuleError(".value", "value must be empty when operator is Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise RuleError(".tolerationSeconds", "tolerationSeconds requires effect NoExecute")
        return self


class PersistentVolumeClaimRef(_Model):
    """An existing PersistentVolumeClaim in the run's namespace, writable by the trainer (ReadWriteMany when several
    pods of the pool may run at once or on several nodes)."""

    claim_name: str = Field(json_schema_extra={"pattern": DNS1123_SUBDOMAIN, "maxLength": DNS1123_SUBDOMAIN_MAX})
    """Name of the PersistentVolumeClaim (a DNS-1123 subdomain)."""

    @field_validator("claim_name")
    @classmethod
    def _dns(cls, value: str) -> str:
        if not value or len(value) > DNS1123_SUBDOMAIN_MAX or not re.match(DNS1123_SUBDOMAIN, value):
            raise ValueError(
                f"{value[:64]!r}{'...' if len(value) > 64 else ''} is not a PersistentVolumeClaim name (a DNS-1123 subdomain: lowercase letters, digits, "
                f"'-' and '.', starting and ending with a letter or digit, at most {DNS1123_SUBDOMAIN_MAX} characters)"
            )
        return value


class CompileCache(_Model):
    """A volume that keeps torch.compile's caches (inductor FX graph and AOTAutograd caches, Triton kernels,
    autotuning) across runs, mounted at /cache in every pod of the pool's cases with
    TORCHINDUCTOR_CACHE_DIR=/cache/inductor and TRITON_CACHE_DIR=/cache/triton. Unset:
    nothing is mounted and each fresh pod compiles from scratch (minutes for a 4B model)."""

    persistent_volume_claim: PersistentVolumeClaimRef


class LocalObjectReference(_Model):
    """A core/v1 LocalObjectReference (e.g. an image pull Secret)."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=DNS1123_SUBDOMAIN_MAX)
    """Name of the object in the run's namespace."""


class EnvVar(BaseModel):
    """A core/v1 EnvVar (name with value or valueFrom)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True)
    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""
    value: str | None = None
    """Value."""
    value_from: dict[str, Any] | None = Field(
        default=None, alias="valueFrom", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Source of the value (core/v1 EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef, ...)."""


class VolumeMount(BaseModel):
    """A core/v1 VolumeMount."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True)
    name: str = Field(min_length=1)
    """Name of a volume of the pod (podTemplate.volumes)."""
    mount_path: str = Field(alias="mountPath", pattern=r"^/")
    """Absolute path in the trainer container."""
    sub_path: str | None = Field(default=None, alias="subPath")
    """Path inside the volume."""
    read_only: bool | None = Field(default=None, alias="readOnly")
    """Mount read-only."""


class Volume(BaseModel):
    """A core/v1 Volume: a name and one volume source (persistentVolumeClaim, configMap, secret, hostPath, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)
    name: str = Field(pattern=DNS1123_LABEL, max_length=63)
    """Volume name (a DNS label)."""


# any resource name a container may request besides the GPUs: rdma/rdma_shared_device_a, nvidia.com/mig-1g.10gb,
# hugepages-2Mi, ephemeral-storage
EXTRA_RESOURCE_NAME = r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$"


INT_OR_STRING_MAP = {"additionalProperties": {"x-kubernetes-int-or-string": True}}


class ExtraResources(_Model):
    """Requests and limits added next to the GPUs (e.g. rdma/rdma_shared_device_a: 1, hugepages-2Mi: 1Gi)."""

    requests: dict[str, str] = Field(default_factory=dict, json_schema_extra=INT_OR_STRING_MAP)
    """Extra requests (resource name -> quantity)."""
    limits: dict[str, str] = Field(default_factory=dict, json_schema_extra=INT_OR_STRING_MAP)
    """Extra limits (resource name -> quantity); an extended resource limit is also its request."""

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, value):
        if isinstance(value, dict):  # a quantity may be written as a number (rdma/rdma_shared_device_a: 1)
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for k, v in value.items()
            }
        return value

    @field_validator("requests", "limits")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not re.match(EXTRA_RESOURCE_NAME, k)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a resource name (e.g. rdma/rdma_shared_device_a)")
        return value


class PodTemplate(_Model):
    """Settings for the trainer pods of the cases, so they fit the cluster. Set per run (spec.podTemplate) and per
    pool (spec.pools[].podTemplate); the pool's wins field by field (lists and maps are merged, the pool's entry
    winning on the same name), and the operator's trainerPods defaults (chart values) come below both."""

    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    """Secrets to pull the trainer image with (a private registry)."""
    service_account_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN)
    """ServiceAccount the pods run as."""
    priority_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN)
    """PriorityClass of the pods."""
    runtime_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN)
    """RuntimeClass of the pods (e.g. nvidia)."""
    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra pod labels (the operator's own labels win)."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Extra pod annotations."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment of the trainer container (e.g. NCCL_IB_HCA, NCCL_SOCKET_IFNAME)."""
    resources: ExtraResources | None = None
    volumes: list[Volume] = Field(default_factory=list, max_length=16)
    """Extra volumes of the pods (core/v1 Volume)."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=16)
    """Extra mounts in the trainer container."""


class ModelWeights(_Model):
    """Real weights of one model (a safetensors file or a directory of them), loaded instead of random weights."""

    persistent_volume_claim: PersistentVolumeClaimRef | None = None
    """The claim holding the weights, mounted read-only at /weights in the model's trainer pods. Unset: `path` is
    used as it is (the local executor: a file or directory on this machine; a cluster: a path inside the trainer
    container, e.g. under a podTemplate volume mount)."""
    path: NonEmptyStr
    """With persistentVolumeClaim, the path inside the claim (relative); else a file or directory as it is."""


class Pool(_Model):
    """A set of identical GPU nodes."""

    name: str = Field(pattern=DNS1123_LABEL, max_length=30)
    """Pool name, used in case ids, Job names and reports (DNS label, at most 30 characters)."""
    gpus_per_node: int = Field(default=1, ge=1, le=16)
    """GPUs each pod requests (torchrun starts one process per GPU)."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Nodes per case; more than one runs one pod per node that rendezvous through torchrun (spec.multiNode.engine)."""
    resource_name: str = Field(
        default="nvidia.com/gpu",
        pattern=RESOURCE_NAME,
        max_length=LABEL_KEY_MAX,
        json_schema_extra=crd_rules(
            cel(
                "!self.matches('^([^/]*[.])?kubernetes[.]io/')",
                "must be an extended resource outside the kubernetes.io domain",
            )
        ),
    )
    """Extended resource that counts GPUs on these nodes: a domain-qualified name such as nvidia.com/gpu or
    amd.com/gpu (not cpu or memory, which would drop the GPU request)."""
    node_selector: dict[str, Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]] = Field(
        default_factory=dict,
        max_length=32,
        json_schema_extra=crd_rules(
            cel(f"self.all(k, size(k) <= {LABEL_KEY_MAX} && k.matches('{LABEL_KEY}'))", "keys must be label keys")
        ),
    )
    """Node labels a case's pod requires (e.g. nvidia.com/gpu.product); keys and values in Kubernetes' label
    syntax."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Tolerations for the pool's taints (core/v1 Toleration)."""
    image: str = Field(
        default="ghcr.io/trainbench/trainer-cuda-hopper:0.1.0", pattern=IMAGE_REFERENCE, max_length=IMAGE_REFERENCE_MAX
    )
    """Trainer image for this pool's hardware family (an image reference: [registry/]name[:tag][@sha256:digest])."""
    hardware: str | None = Field(default=None, pattern=DISPLAY_TEXT, max_length=DISPLAY_TEXT_MAX)
    """Display name in reports (e.g. "H100 HBM3": letters, digits, spaces and ._()/+,:@-, at most 64 characters);
    default is the GPU the pod saw."""
    peak_tflops: float | None = Field(default=None, gt=0, le=1e6, alias="peakTFLOPs")
    """Peak dense bf16 TFLOPs per GPU for MFU; overrides the trainer's table."""
    price_per_gpu_hour: float | None = Field(default=None, ge=0, le=1e6, alias="pricePerGPUHour")
    """Price of one GPU-hour, for cost columns in the report."""
    max_concurrent: int = Field(default=1, ge=1, le=1000)
    """At most this many cases run on the pool at the same time."""
    cpu: str | None = Field(default=None, pattern=CPU_QUANTITY, max_length=32)
    """CPU request and limit of a case's pod (a Kubernetes quantity)."""
    memory: str | None = Field(default=None, pattern=MEMORY_QUANTITY, max_length=32)
    """Memory request and limit of a case's pod (a Kubernetes quantity of at least 1M: M, Mi, G, Gi, T, Ti; e.g.
    64Gi)."""
    compile_cache: CompileCache | None = None
    pod_template: PodTemplate | None = None

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) > LABEL_KEY_MAX or not re.match(LABEL_KEY, key):
                raise ValueError(f"{key[:64]!r}: keys must be label keys")
        return value

    @field_validator("resource_name")
    @classmethod
    def _extended(cls, value: str) -> str:
        if re.match(r"^([^/]*[.])?kubernetes[.]io/", value):
            raise ValueError("must be an extended resource outside the kubernetes.io domain")
        return value

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


class CaseSelector(_Model):
    """A partial case."""

    model: str | None = Field(default=None, pattern=MODEL_NAME, max_length=MODEL_NAME_MAX)
    """Model name."""
    type: BenchType | None = None
    """Training type."""
    seq_len: int | None = Field(default=None, ge=1, le=1048576)
    """Sequence length."""
    ac: AcMode | None = None
    """Activation checkpointing mode."""
    attn: AttnBackend | None = None
    """Attention backend."""
    ep: int | None = Field(default=None, ge=1, le=1024)
    """Expert-parallel degree."""
    cp: int | None = Field(default=None, ge=1, le=1024)
    """Context-parallel degree."""
    pool: str | None = Field(default=None, max_length=30)
    """Pool name."""


class Matrix(_Model):
    """The cases: the product models x types x seqLens x ac x attn x ep x cp x pools, minus exclude, plus include.
    The expansion is deterministic and each case has a stable id."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            cel("self.include.all(i, has(i.model))", "each matrix.include entry needs a model", ".include")
        )
    )

    models: list[Annotated[str, Field(min_length=1, pattern=MODEL_NAME, max_length=MODEL_NAME_MAX)]] = Field(
        min_length=1, max_length=32, json_schema_extra=SET
    )
    """Model names (qwen3-0.6b, llama-3.2-1b, ...) or Hugging Face ids (Qwen/Qwen3-0.6B); the local executor also
    takes a path to a config.json."""
    types: list[BenchType] = Field(default_factory=lambda: ["sft-full"], min_length=1, json_schema_extra=SET)
    """Benchmark types. sft-full, rl-full (full fine-tuning), rl-lora (training), generate (decoding speed) or verify
    (C++ code generation, pass@k)."""
    seq_lens: list[SeqLen] = Field(default_factory=lambda: [8192], min_length=1, max_length=32, json_schema_extra=SET)
    """Packed sequence lengths in tokens."""
    ac: list[AcMode] = Field(default_factory=lambda: ["recompute"], min_length=1, json_schema_extra=SET)
    """Activation checkpointing modes."""
    attn: list[AttnBackend] = Field(default_factory=lambda: ["auto"], min_length=1, json_schema_extra=SET)
    """Attention backends."""
    ep: list[Degree] = Field(default_factory=lambda: [1], min_length=1, max_length=16, json_schema_extra=SET)
    """Expert-parallel degrees (mixture-of-experts models only)."""
    cp: list[Degree] = Field(default_factory=lambda: [1], min_length=1, max_length=16, json_schema_extra=SET)
    """Context-parallel degrees."""
    pools: list[Annotated[str, Field(max_length=30)]] | None = Field(default=None, max_length=16, json_schema_extra=SET)
    """Pools to run the matrix on; default every pool in spec.pools."""
    include: list[CaseSelector] = Field(default_factory=list, max_length=64)
    """Extra cases; unset fields take the first value of the matrix list."""
    exclude: list[CaseSelector] = Field(default_factory=list, max_length=64)
    """Cases to drop; an entry matches a case when every field it sets is equal (its model and pool must be in the
    matrix)."""

    @field_validator("models", "types", "seq_lens", "ac", "attn", "ep", "cp", "pools")
    @classmethod
    def _distinct(cls, value: list | None) -> list | None:
        for i, item in enumerate(value or []):
            if item in value[:i]:
                raise RuleError(f"[{i}]", f"duplicate value {item!r}")
        return value


class Lora(_Model):
    """LoRA settings for rl-lora cases."""

    rank: int = Field(default=16, ge=1, le=1024)
    """LoRA rank r."""
    alpha: float = Field(default=32, gt=0, le=1e6)
    """LoRA alpha (scaling = alpha / rank)."""
    targets: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]] = Field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1, max_length=16, json_schema_extra=SET
    )
    """Module names LoRA adapts (each must name linear layers of every rl-lora model)."""

    @field_validator("targets")
    @classmethod
    def _distinct(cls, value: list) -> list:
        for i, item in enumerate(value):
            if item in value[:i]:
                raise RuleError(f"[{i}]", f"duplicate value {item!r}")
        return value


class Generate(_Model):
    """Settings of the generate cases (decoding speed; seqLen is the prompt length)."""

    batch_sizes: list[Annotated[int, Field(ge=1, le=MAX_DECODE_BATCH)]] = Field(
        default_factory=lambda: list(GENERATE_BATCH_SIZES), min_length=1, max_length=16, json_schema_extra=SET
    )
    """Decode batch sizes, each measured on its own (at most 4096)."""
    new_tokens: int = Field(default=GENERATE_NEW_TOKENS, ge=1, le=65536)
    """Tokens generated per sequence (seqLen + newTokens must fit the model's context)."""
    temperature: float = Field(default=1.0, ge=0, le=10)
    """Sampling temperature (0 is greedy)."""
    no_cache_batch: int = Field(default=1, ge=0, le=MAX_DECODE_BATCH)
    """Batch size also decoded without a KV cache for the speed-up (0 skips it)."""


class Verify(_Model):
    """Settings of the verify cases (C++ programs sampled from the model, compiled and run)."""

    samples: int = Field(default=VERIFY_SAMPLES, ge=1, le=1024)
    """Samples per prompt (n of pass@k)."""
    new_tokens: int = Field(default=512, ge=1, le=65536)
    """Tokens generated per sample (must fit the model's context)."""
    temperature: float = Field(default=0.8, ge=0, le=10)
    """Sampling temperature (0 is greedy)."""
    raft_cycles: int = Field(default=0, ge=0, le=100)
    """RAFT cycles after the first evaluation (keep passing samples, fine-tune on them, evaluate again)."""
    run_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    """Wall-clock and CPU limit of each compiled program."""
    run_memory_mib: int = Field(default=256, ge=16, le=65536)
    """Address-space limit of each compiled program in MiB."""


MultiNodeEngine = Literal["Job", "JobSet"]


class MultiNode(_Model):
    """How a case on a pool of several nodes (nodes > 1) runs; a one-node case is always one plain Job. A setting of
    the run, not of a pool: whether the cluster serves JobSet is a property of the cluster, the same for every pool."""

    engine: MultiNodeEngine = "Job"
    """Job (an Indexed Job of nodes pods with a headless Service) or JobSet (a jobset.x-k8s.io/v1alpha2 JobSet of one
    replicated Job, which makes the headless Service itself; the cluster must serve the JobSet API, else those cases
    fail with reason JobSetUnavailable). With queueName, Kueue admits either as one workload, all pods together."""


class Baseline(_Model):
    """Where the numbers to compare against come from."""

    # has(self.source): the API server checks the rule against the field's default `{}` itself, before any nested
    # default is applied (Kubernetes 1.36 refused the CRD with 422 without it)
    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            cel(
                "!has(self.source) || self.source != 'configMap' || has(self.configMap)",
                "baseline.configMap is required when baseline.source is configMap",
                ".configMap",
            )
        )
    )

    source: Literal["previous", "configMap", "none"] = "previous"
    """previous (the last finished run of the same suite), configMap (a pinned results ConfigMap) or none."""
    config_map: str | None = Field(default=None, pattern=CONFIGMAP_NAME)
    """With source configMap, the ConfigMap holding results.json."""

    @model_validator(mode="after")
    def _cm(self):
        if self.source == "configMap" and not self.config_map:
            raise RuleError(".configMap", "baseline.configMap is required when baseline.source is configMap")
        return self


class Thresholds(_Model):
    """Percent changes beyond which a metric counts as a regression."""

    default: float = Field(default=5.0, gt=0, le=100)
    """Threshold for metrics without their own."""
    mfu: float | None = Field(default=None, gt=0, le=1000)
    """Threshold for MFU."""
    tps: float | None = Field(default=None, gt=0, le=1000)
    """Threshold for tokens per second."""
    step_time: float | None = Field(default=None, gt=0, le=1000)
    """Threshold for step time."""
    peak_memory: float | None = Field(default=None, gt=0, le=1000)
    """Threshold for peak memory."""
    tokens_per_joule: float | None = Field(default=None, gt=0, le=1000)
    """Threshold for tokens per joule."""

    def for_metric(self, metric: str) -> float:
        value = getattr(self, metric, None)
        return self.default if value is None else value


GIT_BRANCH = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"


class PullRequest(_Model):
    """A pull request from publish.branch into base, opened (or an open one reused) through the forge's REST API
    (GitHub's POST /repos/{owner}/{repo}/pulls; GitHub Enterprise and Gitea/Forgejo serve the same call)."""

    base: str = Field(default="main", pattern=GIT_BRANCH, max_length=255)
    """Branch the pull request targets; a publish branch that does not exist yet starts from it."""
    api: str | None = Field(default=None, pattern=r"^https?://[^\s]+$", max_length=512)
    """The forge's API URL (default https://api.github.com for github.com, else https://HOST/api/v3)."""
    title: str | None = Field(default=None, max_length=256)
    """The pull request's title (default "trainbench: SUITE results (RUN)")."""


class Publish(_Model):
    """Commit the finished run's report.md and results.json to a branch of a git repository (once per run; the
    outcome is recorded on the results ConfigMap and the webhook message links to the report)."""

    repo: str = Field(pattern=r"^((https?|ssh|git|file)://[^\s]+|[^@\s/:]+@[^\s:]+:[^\s]+)$", max_length=512)
    """Repository URL: https://host/owner/repo.git, ssh://git@host/owner/repo.git, git@host:owner/repo.git or file://."""
    branch: str = Field(default="trainbench-results", pattern=GIT_BRANCH, max_length=255)
    """Branch the commit goes to (created when missing)."""
    path: str = Field(default="benchmarks/{suite}", min_length=1, max_length=255)
    """Folder in the repository for report.md and results.json; {suite}, {run} and {date} are filled in."""
    secret_ref: LocalObjectReference | None = None
    """Secret in the run's namespace with the credentials: keys username and token (HTTPS; the token also opens
    the pull request), or ssh-privatekey (and known_hosts) for ssh URLs."""
    pull_request: PullRequest | None = None
    report_url_template: str | None = Field(default=None, max_length=1024)
    """The report link of the webhook message; {web} {branch} {commit} {path} {file} {suite} {run} {date} are
    filled in (default: the forge's URL of the committed report.md, for github.com and GitLab hosts)."""

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        if ".." in value.split("/") or ".git" in value.split("/"):
            raise ValueError("must stay inside the repository (no .. or .git)")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if ".." in value or "//" in value or value.endswith(("/", ".", ".lock")):
            raise ValueError(f"{value!r} is not a valid git branch name")
        return value


class BenchmarkRunSpec(_Model):
    """What to benchmark, where, and how to judge the numbers."""

    model_config = ConfigDict(
        json_schema_extra=crd_rules(
            cel("self.pools.all(p, self.pools.exists_one(q, q.name == p.name))", "pool names must be unique", ".pools"),
            cel("self.batchSize % self.microBatch == 0", "batchSize must be a multiple of microBatch", ".batchSize"),
            cel(
                "!has(self.matrix.pools) || self.matrix.pools.all(n, self.pools.exists(p, p.name == n))",
                "matrix.pools may only name pools defined in spec.pools",
                ".matrix.pools",
            ),
            cel(
                "self.matrix.include.all(i, !has(i.pool) || self.pools.exists(p, p.name == i.pool))",
                "matrix.include[].pool may only name pools defined in spec.pools",
                ".matrix.include",
            ),
            cel(
                "self.matrix.exclude.all(x, !has(x.pool) || self.pools.exists(p, p.name == x.pool))",
                "matrix.exclude[].pool may only name pools defined in spec.pools",
                ".matrix.exclude",
            ),
        )
    )

    suite: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=40)
    """Name of the benchmark suite this run belongs to (e.g. "nightly"); baselines and history are matched by suite.
    Defaults to the run's name without a trailing date/number."""
    pools: list[Pool] = Field(min_length=1, max_length=16)
    """The GPU pools cases can run on. Every case runs on exactly one pool."""
    matrix: Matrix
    lora: Lora = Field(default_factory=Lora)
    steps: int = Field(default=5, ge=1, le=10000)
    """Measured optimizer steps per case (after the warm-up steps)."""
    warmup_steps: int = Field(default=1, ge=0, le=1000)
    """Warm-up steps per case, excluded from the statistics."""
    micro_batch: int = Field(default=1, ge=1, le=MAX_BATCH)
    """Sequences per forward/backward pass."""
    batch_size: int = Field(default=1, ge=1, le=MAX_BATCH)
    """Sequences per optimizer step (gradient accumulation = batchSize / microBatch)."""
    compile: bool = False
    """torch.compile the model."""
    auto_micro_batch: bool = False
    """Training cases run the largest micro-batch that fits (found by a search, cached per model, GPU and seqLen);
    microBatch is then ignored."""
    memory_limit_gib: float | None = Field(default=None, gt=0, le=100000)
    """With autoMicroBatch, the memory in GiB the micro-batch must fit in (default the GPU's)."""
    generate: Generate = Field(default_factory=Generate)
    verify: Verify = Field(default_factory=Verify)
    timeout_seconds: int = Field(default=3600, ge=30, le=MAX_TIMEOUT_SECONDS)
    """Wall-clock limit of each case's Job (activeDeadlineSeconds; at most 7 days); a case past it fails with
    Timeout."""
    suspend: bool = False
    """Stop launching new cases; running and finished cases are kept."""
    queue_name: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=63)
    """Kueue LocalQueue; Jobs get the kueue.x-k8s.io/queue-name label and start suspended for Kueue to admit."""
    multi_node: MultiNode = Field(default_factory=MultiNode)
    cancel: bool = False
    """Stop the run: running cases are stopped (their Jobs deleted) and marked Cancelled, cases not started are
    Cancelled, and the results and report of what finished are written."""
    pod_template: PodTemplate | None = None
    weights: dict[NonEmptyStr, ModelWeights] = Field(default_factory=dict, max_length=32)
    """Real weights per model (its name or Hugging Face id, as in matrix.models); models not named run with random
    weights."""
    baseline: Baseline = Field(default_factory=Baseline)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    publish: Publish | None = None
    repeats: int = Field(default=1, ge=1, le=20)
    """Fresh processes (pods) per case, interleaved across cases (round 1 of every case, then round 2, ...). The
    case's value is their median (olympic mean from 5 up) and their run-to-run spread feeds the verdict. 1 suits
    a nightly whose baseline pools the suite's last runs (their spread is known); raise it for a pinned baseline
    or a noisy pool."""
    confirm: int = Field(default=2, ge=0, le=10)
    """Re-runs of a case whose regression is suspected, as fresh processes (pods) after the other cases; it is
    Confirmed when they still regress and Cleared when they do not. Only Confirmed regressions count and alert.
    0 confirms a significant regression at once."""
    calibrate: bool = False
    """Run one calibration case per pool before the model cases (one pod, 1 GPU, about 30 s): it measures the
    pool's bf16 GEMM and attention TFLOP/s, and the report then shows each case's "% of floor" and flags figures
    above the measured ceilings. Off by default so that a run runs exactly the cases its matrix names; a nightly
    suite turns it on."""

    @model_validator(mode="after")
    def _cross(self):
        names = [p.name for p in self.pools]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RuleError(".pools", f"pool names must be unique: duplicate pool name(s) {dup}")
        if self.batch_size % self.micro_batch:
            raise RuleError(
                ".batchSize", f"batchSize ({self.batch_size}) must be a multiple of microBatch ({self.micro_batch})"
            )
        for i, x in enumerate(self.matrix.exclude):
            if x.pool is not None and x.pool not in names:
                raise RuleError(f".matrix.exclude[{i}].pool", f"unknown pool {x.pool!r}; defined: {', '.join(names)}")
        return self


RunPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "PartiallyFailed", "Failed", "Cancelled"]
CasePhase = Literal["Pending", "Running", "Succeeded", "Failed", "MetricsUnavailable", "Skipped", "Cancelled"]


class Condition(_Model):
    """A standard condition."""

    type: str
    """Condition type."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str | None = None
    """CamelCase reason."""
    message: str | None = None
    """Human-readable details (names the offending field for SpecValid=False)."""
    observed_generation: int | None = Field(default=None, json_schema_extra=INT64)
    """The metadata.generation the condition was set for."""
    last_transition_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    """When the status last changed."""


class CaseStatus(_Model):
    """A case's state."""

    id: str | None = None
    """Stable case id."""
    model: str | None = None
    """Model."""
    type: str | None = None
    """Training type."""
    seq_len: int | None = None
    """Sequence length."""
    pool: str | None = None
    """Pool."""
    job: str | None = None
    """Job name (of a JobSet case, the JobSet's child Job)."""
    job_set: str | None = None
    """JobSet name (multiNode.engine JobSet only)."""
    phase: CasePhase | None = None
    """Pending, Running, Succeeded, Failed, MetricsUnavailable, Skipped or Cancelled."""
    reason: str | None = None
    """Failure reason (OOMKilled, Unschedulable, Timeout, ImagePullBackOff, Evicted, Error, JobSetUnavailable, ...)."""
    message: str | None = None
    """Failure details (exit code, last log lines)."""
    node: str | None = None
    """Node the rank-0 pod ran on."""
    step: int | None = None
    """Last step the trainer reported."""
    steps_total: int | None = None
    """Warm-up plus measured steps."""
    state: str | None = None
    """Trainer state (starting, warmup, measuring, done, failed)."""
    tps: float | None = None
    """Tokens per second (live, or the mean when finished)."""
    mfu: float | None = None
    """MFU in percent (live, or the mean when finished)."""
    step_time: float | None = None
    """Step time in seconds (live, or the mean when finished)."""
    started_at: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    """When the Job was created."""
    finished_at: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    """When the case ended."""
    baseline_image: str | None = None
    """Set on a run of a suspected case on its baseline's image (beside its confirming re-runs): that image. It
    measures the baseline in the same window, not this run's code; a failure of it (the image is gone) is not a
    failure of the run."""


class BenchmarkRunStatus(_Model):
    """What the operator observed; written by the operator only."""

    phase: RunPhase | None = None
    """Pending, Running, Suspended, Succeeded, PartiallyFailed, Failed or Cancelled (an invalid spec is Failed, with condition
    SpecValid=False naming the field)."""
    message: str | None = None
    """Human-readable summary of the phase."""
    observed_generation: int | None = Field(default=None, json_schema_extra=INT64)
    """The metadata.generation this status describes."""
    progress: str | None = None
    """"done/total": cases that have ended over cases planned."""
    total: int | None = None
    """Cases planned."""
    done: int | None = None
    """Cases that have ended (succeeded or failed)."""
    succeeded: int | None = None
    """Cases that succeeded."""
    failed: int | None = None
    """Cases that failed, MetricsUnavailable included."""
    running: int | None = None
    """Cases whose Job is running."""
    pending: int | None = None
    """Cases not started yet or waiting for a node."""
    regressions: int | None = None
    """Cases with a regression against the baseline (after their confirming re-runs)."""
    confirm: dict[str, int] | None = None
    """Confirming re-runs given to each case whose regression was suspected once every case had ended (case id ->
    re-runs); {} when none was suspected. Set once."""
    confirm_baseline: dict[str, str] | None = None
    """The image each suspected case's baseline was measured with, where it differs from this run's and is known
    (case id -> image): the confirming re-runs alternate with runs of that image and are compared with them. Set
    once, with confirm."""
    started_at: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    """When the first case was launched."""
    completed_at: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    """When the last case ended."""
    results_config_map: str | None = None
    """ConfigMap holding results.json."""
    report_config_map: str | None = None
    """ConfigMap holding report.md."""
    conditions: list[Condition] | None = None
    """Ready (results written), SpecValid, Completed, MetricsUnavailable, RegressionDetected."""
    cases: list[CaseStatus] | None = None
    """One entry per planned case."""


class BenchmarkRun(_Model):
    """A BenchmarkRun runs a matrix of training benchmark cases (model x type x shape x pool) as Jobs on GPU pools,
    collects each case's metrics and writes a results ConfigMap and a Markdown report."""

    api_version: str | None = None
    """APIVersion of this object (trainbench.dev/v1alpha1)."""
    kind: str | None = None
    """Kind of this object (BenchmarkRun)."""
    metadata: dict[str, Any] | None = None
    spec: BenchmarkRunSpec
    status: BenchmarkRunStatus | None = None


# The printer columns of `kubectl get benchmarkruns` (the CRD's additionalPrinterColumns)
PRINTER_COLUMNS = [
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "Pending, Running, Suspended, Succeeded, PartiallyFailed, Failed or Cancelled (an invalid spec is Failed).",
    },
    {
        "name": "Cases",
        "type": "string",
        "jsonPath": ".status.progress",
        "description": "Cases that have ended / cases planned.",
    },
    {
        "name": "Failed",
        "type": "integer",
        "jsonPath": ".status.failed",
        "description": "Cases that failed (any reason, MetricsUnavailable included).",
    },
    {
        "name": "Regressions",
        "type": "integer",
        "jsonPath": ".status.regressions",
        "description": "Metrics worse than the baseline by more than the threshold.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


class SpecError(ValueError):
    """A BenchmarkRun spec that cannot run. `field` is the path of the offending field (camelCase)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def parse_spec(spec: dict) -> BenchmarkRunSpec:
    """Validate a BenchmarkRun's `spec` exactly as the CRD does (strict types, bounds, patterns, the CEL rules'
    Python mirrors, unknown fields refused); raise SpecError naming the first bad field."""
    if not isinstance(spec, dict):
        raise SpecError("spec", "must be an object")
    try:
        return BenchmarkRunSpec.model_validate(spec)
    except ValidationError as e:
        err = e.errors()[0]
        loc = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, RuleError):  # the field the matching CEL rule names
            loc += cause.field_path
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif "input" in err and err["type"].endswith(("_type", "_parsing", "finite_number")):
            msg = f"{msg} (got {_shown(err['input'])})"
        raise SpecError(loc, _one_line(msg)) from None


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def _shown(value: Any) -> str:
    """A short repr of a bad value (bounded: never walks a whole nested input)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
