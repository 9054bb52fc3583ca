"""The BenchmarkRun API (trainbench.dev/v1alpha1) as typed Python objects.

The CRD in `data/crd.yaml` is what the API server enforces; these pydantic models parse the same spec
in the operator and in the local executor, so both refuse bad input with the same messages. Field names
are camelCase on the wire (aliases) and snake_case in Python.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

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

# an object name that is a DNS-1123 subdomain (PersistentVolumeClaims, ConfigMaps): lowercase alphanumerics,
# '-' and '.', starting and ending alphanumeric, at most 253 characters
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_SUBDOMAIN_MAX = 253


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Toleration(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds")


class PersistentVolumeClaimRef(_Model):
    """An existing PersistentVolumeClaim in the run's namespace (core/v1 PersistentVolumeClaimVolumeSource's name)."""

    claim_name: str

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
    """Where a pool's trainer pods keep torch.compile's caches (inductor's FX graph and AOTAutograd caches, Triton
    kernels, autotuning results) between runs: a volume mounted at `kube.COMPILE_CACHE_PATH`. Without it every
    fresh pod compiles from nothing (minutes for a 4B model, docs/operator.md "Compile cache")."""

    persistent_volume_claim: PersistentVolumeClaimRef


class Pool(_Model):
    """A set of identical GPU nodes a case can run on."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=30)
    gpus_per_node: int = Field(default=1, ge=1, le=16)
    nodes: int = Field(default=1, ge=1, le=64)
    resource_name: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image: str = "ghcr.io/trainbench/trainer-cuda-hopper:0.1.0"
    hardware: str | None = None  # display name in reports, e.g. "H100 HBM3"; default: the GPU the pod saw
    peak_tflops: float | None = Field(default=None, gt=0, alias="peakTFLOPs")
    price_per_gpu_hour: float | None = Field(default=None, ge=0, alias="pricePerGPUHour")
    max_concurrent: int = Field(default=1, ge=1)
    cpu: str | None = None
    memory: str | None = None
    compile_cache: CompileCache | None = None  # off by default: nothing mounted, torch's caches live in the pod

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


class CaseSelector(_Model):
    """A partial case: every field given must match (exclude) or is set (include)."""

    model: str | None = None
    type: BenchType | None = None
    seq_len: int | None = Field(default=None, ge=1)
    ac: AcMode | None = None
    attn: AttnBackend | None = None
    ep: int | None = Field(default=None, ge=1)
    cp: int | None = Field(default=None, ge=1)
    pool: str | None = None


class Matrix(_Model):
    models: list[str] = Field(min_length=1)
    types: list[BenchType] = Field(default_factory=lambda: ["sft-full"], min_length=1)
    seq_lens: list[PositiveInt] = Field(default_factory=lambda: [8192], min_length=1)
    ac: list[AcMode] = Field(default_factory=lambda: ["recompute"], min_length=1)
    attn: list[AttnBackend] = Field(default_factory=lambda: ["auto"], min_length=1)
    ep: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    cp: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    pools: list[str] | None = None  # default: every pool
    include: list[CaseSelector] = Field(default_factory=list)
    exclude: list[CaseSelector] = Field(default_factory=list)


class Lora(_Model):
    rank: int = Field(default=16, ge=1, le=1024)
    alpha: float = Field(default=32, gt=0)
    targets: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1)


class Generate(_Model):
    """Settings of the generate cases (decoding speed; seqLen is the prompt length)."""

    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: list(GENERATE_BATCH_SIZES), min_length=1)
    new_tokens: int = Field(default=GENERATE_NEW_TOKENS, ge=1, le=65536)
    temperature: float = Field(default=1.0, ge=0)
    no_cache_batch: int = Field(default=1, ge=0)


class Verify(_Model):
    """Settings of the verify cases (C++ code generation checked by compiling and running it)."""

    samples: int = Field(default=VERIFY_SAMPLES, ge=1, le=1024)
    new_tokens: int = Field(default=512, ge=1, le=65536)
    temperature: float = Field(default=0.8, ge=0)
    raft_cycles: int = Field(default=0, ge=0, le=100)
    run_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    run_memory_mib: int = Field(default=256, ge=16)


MultiNodeEngine = Literal["Job", "JobSet"]


class MultiNode(_Model):
    """How a case on a pool of several nodes runs (a one-node case is always one plain Job). A setting of the
    run, not of a pool: whether the cluster serves JobSet is a property of the cluster, the same for every pool."""

    engine: MultiNodeEngine = "Job"


class Baseline(_Model):
    """Where the numbers to compare against come from."""

    source: Literal["previous", "configMap", "none"] = "previous"
    config_map: str | None = None  # with source=configMap: a ConfigMap holding results.json

    @model_validator(mode="after")
    def _cm(self):
        if self.source == "configMap" and not self.config_map:
            raise ValueError("baseline.configMap is required when baseline.source is configMap")
        return self


class Thresholds(_Model):
    """Percent changes beyond which a metric counts as a regression."""

    default: float = Field(default=5.0, gt=0, le=100)
    mfu: float | None = Field(default=None, gt=0)
    tps: float | None = Field(default=None, gt=0)
    step_time: float | None = Field(default=None, gt=0)
    peak_memory: float | None = Field(default=None, gt=0)
    tokens_per_joule: float | None = Field(default=None, gt=0)

    def for_metric(self, metric: str) -> float:
        value = getattr(self, metric, None)
        return self.default if value is None else value


class BenchmarkRunSpec(_Model):
    suite: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)
    pools: list[Pool] = Field(min_length=1)
    matrix: Matrix
    lora: Lora = Field(default_factory=Lora)
    steps: int = Field(default=5, ge=1, le=10000)
    warmup_steps: int = Field(default=1, ge=0, le=1000)
    micro_batch: int = Field(default=1, ge=1)
    auto_micro_batch: bool = False  # training cases: --micro-batch auto (the largest that fits; microBatch ignored)
    memory_limit_gib: float | None = Field(default=None, gt=0)  # with autoMicroBatch: the capacity to fit in
    batch_size: int = Field(default=1, ge=1)  # sequences per optimizer step (grad accumulation = batch/micro)
    compile: bool = False
    generate: Generate = Field(default_factory=Generate)
    verify: Verify = Field(default_factory=Verify)
    timeout_seconds: int = Field(default=3600, ge=30)
    suspend: bool = False
    queue_name: str | None = None
    multi_node: MultiNode = Field(default_factory=MultiNode)
    baseline: Baseline = Field(default_factory=Baseline)
    thresholds: Thresholds = Field(default_factory=Thresholds)

    @model_validator(mode="after")
    def _cross(self):
        names = [p.name for p in self.pools]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"pools: duplicate pool name(s) {dup}")
        if self.batch_size % self.micro_batch:
            raise ValueError(f"batchSize ({self.batch_size}) must be a multiple of microBatch ({self.micro_batch})")
        return self


class SpecError(ValueError):
    """A BenchmarkRun spec that cannot run. `field` is the path of the offending field (camelCase)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def parse_spec(spec: dict) -> BenchmarkRunSpec:
    """Validate a BenchmarkRun's `spec`; raise SpecError naming the first bad field."""
    if not isinstance(spec, dict):
        raise SpecError("spec", "must be an object")
    try:
        return BenchmarkRunSpec.model_validate(spec)
    except ValidationError as e:
        err = e.errors()[0]
        loc = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        raise SpecError(loc, msg) from None
