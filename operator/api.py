"""The BenchmarkRun API (trainbench.dev/v1alpha1) as typed Python objects: the one source of the CRD.

`operator/crd.py` generates the CustomResourceDefinition (manifests/crd.yaml, the chart's crds/) from these models:
descriptions, defaults, enums, bounds and the CEL rules (`x-kubernetes-validations`, declared with `cel()` next to
the Python check that mirrors them) are written here once. The same models parse the spec in the operator and in
the local executor, so both refuse bad input with the same messages. Field names are camelCase on the wire
(aliases) and snake_case in Python.
"""

from __future__ import annotations

import re
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

# a DNS-1123 label (pool names, suites): lowercase alphanumerics and '-', starting and ending alphanumeric
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# an object name that is a DNS-1123 subdomain (PersistentVolumeClaims, ConfigMaps): lowercase alphanumerics,
# '-' and '.', starting and ending alphanumeric, at most 253 characters
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_SUBDOMAIN_MAX = 253
CONFIGMAP_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
RESOURCE_NAME = r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
CPU_QUANTITY = r"^[0-9]+(\.[0-9]+)?m?$"
MEMORY_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"

INT64 = {"format": "int64"}
DATE_TIME = {"format": "date-time"}


def cel(rule: str, message: str, field_path: str | None = None) -> dict:
    """One CEL rule of the CRD (an `x-kubernetes-validations` entry), evaluated by the API server on the object
    whose schema declares it (`self`). Declare rules with `crd_rules(...)` in the model's config."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def crd_rules(*rules: dict) -> dict:
    """A model's `json_schema_extra` holding its CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, use_attribute_docstrings=True
    )


class Toleration(BaseModel):
    """A core/v1 Toleration."""

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)
    key: str | None = None
    """Taint key to tolerate; empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal."""
    value: str | None = None
    """Taint value to match with operator Equal."""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match (NoSchedule, PreferNoSchedule, NoExecute); empty matches all."""
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds", json_schema_extra=INT64)
    """With NoExecute, how long the pod stays bound after the taint appears."""


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


class Pool(_Model):
    """A set of identical GPU nodes."""

    name: str = Field(pattern=DNS1123_LABEL, max_length=30)
    """Pool name, used in case ids, Job names and reports (DNS label, at most 30 characters)."""
    gpus_per_node: int = Field(default=1, ge=1, le=16)
    """GPUs each pod requests (torchrun starts one process per GPU)."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Nodes per case; more than one runs one pod per node that rendezvous through torchrun (spec.multiNode.engine)."""
    resource_name: str = Field(default="nvidia.com/gpu", pattern=RESOURCE_NAME)
    """Extended resource that counts GPUs on these nodes, e.g. nvidia.com/gpu or amd.com/gpu."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels a case's pod requires (e.g. nvidia.com/gpu.product)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=16)
    """Tolerations for the pool's taints (core/v1 Toleration)."""
    image: str = Field(default="ghcr.io/trainbench/trainer-cuda-hopper:0.1.0", min_length=1)
    """Trainer image for this pool's hardware family."""
    hardware: str | None = None
    """Display name in reports (e.g. "H100 HBM3"); default is the GPU the pod saw."""
    peak_tflops: float | None = Field(default=None, gt=0, alias="peakTFLOPs")
    """Peak dense bf16 TFLOPs per GPU for MFU; overrides the trainer's table."""
    price_per_gpu_hour: float | None = Field(default=None, ge=0, alias="pricePerGPUHour")
    """Price of one GPU-hour, for cost columns in the report."""
    max_concurrent: int = Field(default=1, ge=1)
    """At most this many cases run on the pool at the same time."""
    cpu: str | None = Field(default=None, pattern=CPU_QUANTITY)
    """CPU request and limit of a case's pod (a Kubernetes quantity)."""
    memory: str | None = Field(default=None, pattern=MEMORY_QUANTITY)
    """Memory request and limit of a case's pod (a Kubernetes quantity, e.g. 64Gi)."""
    compile_cache: CompileCache | None = None

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.nodes


class CaseSelector(_Model):
    """A partial case."""

    model: str | None = None
    """Model name."""
    type: BenchType | None = None
    """Training type."""
    seq_len: int | None = Field(default=None, ge=1)
    """Sequence length."""
    ac: AcMode | None = None
    """Activation checkpointing mode."""
    attn: AttnBackend | None = None
    """Attention backend."""
    ep: int | None = Field(default=None, ge=1)
    """Expert-parallel degree."""
    cp: int | None = Field(default=None, ge=1)
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

    models: list[NonEmptyStr] = Field(min_length=1, max_length=32)
    """Model names (qwen3-0.6b, llama-3.2-1b, ...) or Hugging Face ids (Qwen/Qwen3-0.6B)."""
    types: list[BenchType] = Field(default_factory=lambda: ["sft-full"], min_length=1)
    """Benchmark types. sft-full, rl-full (full fine-tuning), rl-lora (training), generate (decoding speed) or verify
    (C++ code generation, pass@k)."""
    seq_lens: list[PositiveInt] = Field(default_factory=lambda: [8192], min_length=1)
    """Packed sequence lengths in tokens."""
    ac: list[AcMode] = Field(default_factory=lambda: ["recompute"], min_length=1)
    """Activation checkpointing modes."""
    attn: list[AttnBackend] = Field(default_factory=lambda: ["auto"], min_length=1)
    """Attention backends."""
    ep: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    """Expert-parallel degrees (mixture-of-experts models only)."""
    cp: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    """Context-parallel degrees."""
    pools: list[Annotated[str, Field(max_length=30)]] | None = Field(default=None, max_length=16)
    """Pools to run the matrix on; default every pool in spec.pools."""
    include: list[CaseSelector] = Field(default_factory=list, max_length=64)
    """Extra cases; unset fields take the first value of the matrix list."""
    exclude: list[CaseSelector] = Field(default_factory=list, max_length=64)
    """Cases to drop; an entry matches a case when every field it sets is equal."""


class Lora(_Model):
    """LoRA settings for rl-lora cases."""

    rank: int = Field(default=16, ge=1, le=1024)
    """LoRA rank r."""
    alpha: float = Field(default=32, gt=0)
    """LoRA alpha (scaling = alpha / rank)."""
    targets: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1)
    """Module names LoRA adapts."""


class Generate(_Model):
    """Settings of the generate cases (decoding speed; seqLen is the prompt length)."""

    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: list(GENERATE_BATCH_SIZES), min_length=1)
    """Decode batch sizes, each measured on its own."""
    new_tokens: int = Field(default=GENERATE_NEW_TOKENS, ge=1, le=65536)
    """Tokens generated per sequence."""
    temperature: float = Field(default=1.0, ge=0)
    """Sampling temperature (0 is greedy)."""
    no_cache_batch: int = Field(default=1, ge=0)
    """Batch size also decoded without a KV cache for the speed-up (0 skips it)."""


class Verify(_Model):
    """Settings of the verify cases (C++ programs sampled from the model, compiled and run)."""

    samples: int = Field(default=VERIFY_SAMPLES, ge=1, le=1024)
    """Samples per prompt (n of pass@k)."""
    new_tokens: int = Field(default=512, ge=1, le=65536)
    """Tokens generated per sample."""
    temperature: float = Field(default=0.8, ge=0)
    """Sampling temperature (0 is greedy)."""
    raft_cycles: int = Field(default=0, ge=0, le=100)
    """RAFT cycles after the first evaluation (keep passing samples, fine-tune on them, evaluate again)."""
    run_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    """Wall-clock and CPU limit of each compiled program."""
    run_memory_mib: int = Field(default=256, ge=16)
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
            raise ValueError("baseline.configMap is required when baseline.source is configMap")
        return self


class Thresholds(_Model):
    """Percent changes beyond which a metric counts as a regression."""

    default: float = Field(default=5.0, gt=0, le=100)
    """Threshold for metrics without their own."""
    mfu: float | None = Field(default=None, gt=0)
    """Threshold for MFU."""
    tps: float | None = Field(default=None, gt=0)
    """Threshold for tokens per second."""
    step_time: float | None = Field(default=None, gt=0)
    """Threshold for step time."""
    peak_memory: float | None = Field(default=None, gt=0)
    """Threshold for peak memory."""
    tokens_per_joule: float | None = Field(default=None, gt=0)
    """Threshold for tokens per joule."""

    def for_metric(self, metric: str) -> float:
        value = getattr(self, metric, None)
        return self.default if value is None else value


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
    micro_batch: int = Field(default=1, ge=1)
    """Sequences per forward/backward pass."""
    batch_size: int = Field(default=1, ge=1)
    """Sequences per optimizer step (gradient accumulation = batchSize / microBatch)."""
    compile: bool = False
    """torch.compile the model."""
    auto_micro_batch: bool = False
    """Training cases run the largest micro-batch that fits (found by a search, cached per model, GPU and seqLen);
    microBatch is then ignored."""
    memory_limit_gib: float | None = Field(default=None, gt=0)
    """With autoMicroBatch, the memory in GiB the micro-batch must fit in (default the GPU's)."""
    generate: Generate = Field(default_factory=Generate)
    verify: Verify = Field(default_factory=Verify)
    timeout_seconds: int = Field(default=3600, ge=30)
    """Wall-clock limit of each case's Job (activeDeadlineSeconds); a case past it fails with Timeout."""
    suspend: bool = False
    """Stop launching new cases; running and finished cases are kept."""
    queue_name: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=63)
    """Kueue LocalQueue; Jobs get the kueue.x-k8s.io/queue-name label and start suspended for Kueue to admit."""
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


RunPhase = Literal["Pending", "Running", "Suspended", "Succeeded", "PartiallyFailed", "Failed"]
CasePhase = Literal["Pending", "Running", "Succeeded", "Failed", "MetricsUnavailable", "Skipped"]


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
    """Pending, Running, Succeeded, Failed, MetricsUnavailable or Skipped."""
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


class BenchmarkRunStatus(_Model):
    """What the operator observed; written by the operator only."""

    phase: RunPhase | None = None
    """Pending, Running, Suspended, Succeeded, PartiallyFailed or Failed (an invalid spec is Failed, with condition
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
    """Metrics worse than the baseline by more than their threshold."""
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
        "description": "Pending, Running, Suspended, Succeeded, PartiallyFailed or Failed (an invalid spec is Failed).",
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
