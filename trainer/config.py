"""Bench-mode configuration: the CLI of `python -m trainbench.trainer` as a dataclass.

`parse_args(argv)` turns the command line (exactly what `operator.plan.Case.trainer_args()` emits, plus the
local options) into a `JobConfig`: the job's type, device and output plus one config per component (model build,
training, parallelism, metrics, autobatch, generate, verify). `check_static` refuses what cannot run with
`BadConfig` (exit 2); `parallel.layout.validate` adds the checks that need the model and the world size.
Torch-free, so the operator and tests can build configs without importing torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from trainbench.trainer.contract import (
    AC_MODES,
    ATTN_BACKENDS,
    BENCH_TYPES,
    CALIBRATE_TYPE,
    DEFAULT_LORA_TARGETS,
    GENERATE_BATCH_SIZES,
    GENERATE_NEW_TOKENS,
    METRICS_PORT,
    MICRO_BATCH_AUTO,
    TRAIN_TYPES,
    VERIFY_SAMPLES,
)

IMPLS = ("auto", "hf", "fast")
DATA_PARALLEL = ("auto", "ddp", "fsdp")
DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "bfloat16", "float16", "float32")
MIN_DOC_LEN = 16  # every synthetic document has at least this many tokens


class BadConfig(ValueError):
    """The configuration cannot run (exit code contract.EXIT_BAD_CONFIG, one-line reason)."""


# --- the components' configs ------------------------------------------------------------------------------------
# Each component reads its own section (torchtitan style: job.training.seq_len, job.parallel.cp). Field names are
# the CLI's option names (`--seq-len` -> seq_len), so a flat name also finds its section: `job.seq_len`.


@dataclass
class ModelConfig:
    """Which model and how it is built (models/, lora.py, attention.py, ac.py)."""

    model: str = "tiny-qwen3"
    impl: str = "auto"
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    weights: str | None = None
    attn: str = "auto"
    ac: str = "auto"
    compile: bool = False
    lora_rank: int | None = None  # None: 16 for rl-lora
    lora_alpha: float | None = None  # None: 2 * rank
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS


@dataclass
class TrainingConfig:
    """The workload and the optimizer (train.py, data.py, losses.py); seq_len, steps and seed serve every type."""

    seq_len: int = 1024
    steps: int = 5
    warmup_steps: int = 1
    micro_batch: int = 1  # sequences per forward/backward on each rank; 0: auto (autobatch.py finds it)
    batch_size: int = 1  # sequences per optimizer step on each rank (grad accumulation = batch_size / micro_batch)
    seed: int = 0
    docs_per_seq: int = 4  # documents packed into each sequence
    fixed_batch: bool = False  # reuse one batch every step (loss must fall)
    lr: float = 1e-5
    loss_chunk: int = 4096  # tokens per LM-head chunk in the loss
    ratio_low: float = 0.125  # RL: tokens whose importance ratio falls outside [low, high] are masked
    ratio_high: float = 8.0

    @property
    def micro_batch_auto(self) -> bool:
        return self.micro_batch == 0

    @property
    def grad_accum(self) -> int:
        return self.batch_size // self.micro_batch if self.micro_batch else 1


@dataclass
class ParallelConfig:
    """How ranks share the work (distributed.py, parallel/)."""

    dp: str = "auto"  # data parallelism over ranks: ddp, fsdp (FSDP2 fully_shard per block), auto
    cp: int = 1
    ep: int = 1


@dataclass
class MetricsConfig:
    """The run's labels, its /metrics server and the peaks that MFU and bandwidth are measured against."""

    case: str = ""
    pool: str = ""
    run: str = ""
    metrics_port: int = METRICS_PORT  # 0: ephemeral port, -1: no server
    linger: float = 0.0  # seconds to keep serving /metrics after the run
    peak_tflops: float | None = None
    peak_bandwidth_gbps: float | None = None


@dataclass
class AutobatchConfig:
    """`--micro-batch auto` (autobatch.py)."""

    memory_limit_gib: float | None = None  # treat this as the device's capacity (CPU: the only cap there is)
    cache_dir: str | None = None  # default ~/.cache/trainbench


@dataclass
class GenerateConfig:
    """`--type generate` (generate.py); verify samples with new_tokens and temperature too."""

    gen_batch_sizes: tuple[int, ...] = GENERATE_BATCH_SIZES
    new_tokens: int = GENERATE_NEW_TOKENS
    temperature: float = 1.0
    no_cache_batch: int = 1  # the batch size also run without a KV cache (0: skip)


@dataclass
class VerifyConfig:
    """`--type verify` (verify.py)."""

    samples: int = VERIFY_SAMPLES
    raft_cycles: int = 0
    prompts: str | None = None  # a JSONL prompt set (default: the built-in 16 C++ prompts)
    out_dir: str | None = None  # samples JSONL and hardware CSV
    compile_timeout: float = 30.0
    run_timeout: float = 5.0
    run_memory_mib: int = 256


SECTIONS = {
    "build": ModelConfig,
    "training": TrainingConfig,
    "parallel": ParallelConfig,
    "metrics": MetricsConfig,
    "autobatch": AutobatchConfig,
    "generate": GenerateConfig,
    "verify": VerifyConfig,
}
_OWNER = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
_JOB_FIELDS = ("type", "device", "output", "dry_run", "json_line", "extra")
# the result's "config" block: every option under its CLI name, in this order (the schema the operator reads)
FLAT_ORDER = (
    "model", "type", "seq_len", "ac", "attn", "ep", "cp", "steps", "warmup_steps", "micro_batch", "batch_size",
    "compile", "case", "pool", "run", "peak_tflops", "lora_rank", "lora_alpha", "lora_targets", "metrics_port",
    "device", "impl", "output", "dry_run", "weights", "seed", "dtype", "docs_per_seq", "fixed_batch", "lr",
    "loss_chunk", "ratio_low", "ratio_high", "linger", "dp", "memory_limit_gib", "cache_dir", "gen_batch_sizes",
    "new_tokens", "temperature", "peak_bandwidth_gbps", "no_cache_batch", "samples", "raft_cycles", "prompts",
    "out_dir", "compile_timeout", "run_timeout", "run_memory_mib",
)  # fmt: skip


class JobConfig:
    """One bench job: its type, device and output, and one config per component (`SECTIONS`).

    `JobConfig(seq_len=128, cp=2, type="rl-lora")` takes the flat CLI names and puts each in its section (or
    whole sections: `JobConfig(training=TrainingConfig(...))`); `job.seq_len` reads `job.training.seq_len`."""

    build: ModelConfig
    training: TrainingConfig
    parallel: ParallelConfig
    metrics: MetricsConfig
    autobatch: AutobatchConfig
    generate: GenerateConfig
    verify: VerifyConfig

    def __init__(
        self,
        type: str = "sft-full",  # noqa: A002 - the CLI's name
        device: str = "auto",
        output: str | None = None,
        dry_run: bool = False,
        json_line: bool = False,  # --json: the result line on stdout, the table on stderr
        extra: dict | None = None,
        **kw,
    ):
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "dry_run", dry_run)
        object.__setattr__(self, "json_line", json_line)
        object.__setattr__(self, "extra", dict(extra or {}))
        flat = {section: {} for section in SECTIONS}
        for name, value in kw.items():
            if name in SECTIONS:
                continue
            if name not in _OWNER:
                raise TypeError(f"JobConfig: unknown option {name!r}")
            flat[_OWNER[name]][name] = value
        for section, cls in SECTIONS.items():
            given = kw.get(section)
            value = replace(given, **flat[section]) if given is not None else cls(**flat[section])
            object.__setattr__(self, section, value)

    def __getattr__(self, name: str):  # only called when normal lookup fails: the flat CLI names
        section = _OWNER.get(name)
        if section is None:
            raise AttributeError(f"{type(self).__name__!s} has no option {name!r}")
        return getattr(getattr(self, section), name)

    def __setattr__(self, name: str, value) -> None:
        section = _OWNER.get(name)
        if section is not None:
            setattr(getattr(self, section), name, value)
        elif name in _JOB_FIELDS or name in SECTIONS:
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(f"{type(self).__name__} has no option {name!r}")

    def replace(self, **changes) -> JobConfig:
        """A copy with some options (flat names) changed; this one is left as it is."""
        job = {k: changes.pop(k, getattr(self, k)) for k in _JOB_FIELDS}
        sections = {s: replace(getattr(self, s)) for s in SECTIONS}
        return JobConfig(**job, **sections, **changes)

    def __eq__(self, other) -> bool:
        return isinstance(other, JobConfig) and self._values() == other._values()

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v!r}" for k, v in self._values().items())
        return f"JobConfig({parts})"

    def _values(self) -> dict:
        return {k: getattr(self, k) for k in (*_JOB_FIELDS, *SECTIONS)}

    # derived
    @property
    def micro_batch_auto(self) -> bool:
        return self.training.micro_batch_auto

    @property
    def grad_accum(self) -> int:
        return self.training.grad_accum

    @property
    def is_lora(self) -> bool:
        return self.type == "rl-lora"

    @property
    def effective_lora_rank(self) -> int | None:
        if not self.is_lora:
            return None
        return self.build.lora_rank or 16

    @property
    def effective_lora_alpha(self) -> float | None:
        if not self.is_lora:
            return None
        return self.build.lora_alpha if self.build.lora_alpha is not None else 2.0 * self.effective_lora_rank

    def to_dict(self) -> dict:
        """The result's `config` block: flat, under the CLI names (LoRA values as they ran)."""
        d = {name: getattr(self, name) for name in FLAT_ORDER}
        d["lora_targets"] = list(self.build.lora_targets)
        d["lora_rank"] = self.effective_lora_rank
        d["lora_alpha"] = self.effective_lora_alpha
        d["gen_batch_sizes"] = list(self.generate.gen_batch_sizes)
        return d


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one-line BadConfig instead of argparse's usage + exit 2
        raise BadConfig(message)


def build_parser() -> argparse.ArgumentParser:
    d = JobConfig()
    p = _Parser(prog="trainbench bench", description="Train a model architecture on synthetic data and measure it.")
    p.add_argument("--model", default=d.model, help="shipped name (qwen3-0.6b, Qwen/Qwen3-0.6B) or a config.json")
    p.add_argument("--type", default=d.type, choices=(*BENCH_TYPES, CALIBRATE_TYPE))
    p.add_argument("--seq-len", type=int, default=d.seq_len, help="packed sequence length T")
    p.add_argument("--ac", default=d.ac, choices=AC_MODES, help="activation checkpointing")
    p.add_argument("--attn", default=d.attn, choices=ATTN_BACKENDS)
    p.add_argument("--ep", type=int, default=d.ep)
    p.add_argument("--cp", type=int, default=d.cp)
    p.add_argument("--steps", type=int, default=d.steps, help="measured optimizer steps")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="steps run before measuring")
    p.add_argument("--micro-batch", type=_micro_batch, default=d.micro_batch, help="an integer, or auto")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per optimizer step per rank")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=d.compile)
    p.add_argument("--case", default=d.case)
    p.add_argument("--pool", default=d.pool)
    p.add_argument("--run-name", dest="run", default=d.run)  # `--run` is ambiguous under torchrun (--run-path)
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s per device (overrides table)")
    p.add_argument("--lora-rank", type=int, default=None)
    p.add_argument("--lora-alpha", type=float, default=None)
    p.add_argument("--lora-targets", default=",".join(d.lora_targets))
    p.add_argument("--metrics-port", type=int, default=d.metrics_port, help="0: ephemeral, -1: no server")
    p.add_argument("--device", default=d.device, choices=DEVICES)
    p.add_argument("--impl", default=d.impl, choices=IMPLS)
    p.add_argument("--output", default=None, help="write the result JSON here")
    p.add_argument(
        "--json",
        dest="json_line",
        action="store_true",
        help="machine output: stdout's last line is `TRAINBENCH_RESULT <json>`, the table goes to stderr",
    )
    p.add_argument("--dry-run", action="store_true", help="resolve and print the configuration on the meta device")
    p.add_argument("--weights", default=None, help="local safetensors file or directory to load")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--dtype", default=d.dtype, choices=DTYPES)
    p.add_argument("--docs-per-seq", type=int, default=d.docs_per_seq)
    p.add_argument("--fixed-batch", action="store_true", help="train on one batch every step")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--loss-chunk", type=int, default=d.loss_chunk)
    p.add_argument("--ratio-low", type=float, default=d.ratio_low)
    p.add_argument("--ratio-high", type=float, default=d.ratio_high)
    p.add_argument("--dp", default=d.dp, choices=DATA_PARALLEL, help="data parallelism over ranks (world > 1)")
    p.add_argument("--linger", type=float, default=d.linger, help="keep serving /metrics this long after the run")
    g = p.add_argument_group("--micro-batch auto")
    g.add_argument("--memory-limit-gib", type=float, default=None, help="device capacity the search may use")
    g.add_argument("--cache-dir", default=None, help="where found sizes are cached (default ~/.cache/trainbench)")
    g = p.add_argument_group("types generate and verify")
    g.add_argument("--gen-batch-sizes", default=",".join(map(str, d.gen_batch_sizes)), help="generate: batch sizes")
    g.add_argument("--new-tokens", type=int, default=d.new_tokens, help="tokens generated per sequence")
    g.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature (0: greedy)")
    g.add_argument("--peak-bandwidth-gbps", type=float, default=None, help="peak memory GB/s (overrides table)")
    g.add_argument("--no-cache-batch", type=int, default=d.no_cache_batch, help="generate: also run w/o KV cache")
    g.add_argument("--samples", type=int, default=d.samples, help="verify: samples per prompt")
    g.add_argument("--raft-cycles", type=int, default=d.raft_cycles, help="verify: RAFT cycles after the baseline")
    g.add_argument("--prompts", default=None, help="verify: JSONL prompt set (default: the built-in C++ set)")
    g.add_argument("--out-dir", default=None, help="verify: samples JSONL and hardware-samples CSV go here")
    g.add_argument("--compile-timeout", type=float, default=d.compile_timeout)
    g.add_argument("--run-timeout", type=float, default=d.run_timeout)
    g.add_argument("--run-memory-mib", type=int, default=d.run_memory_mib)
    return p


def _micro_batch(value: str) -> int:
    if value == MICRO_BATCH_AUTO:
        return 0
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or {MICRO_BATCH_AUTO!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def parse_args(argv: list[str] | None = None) -> JobConfig:
    ns = build_parser().parse_args(argv)
    kw = vars(ns)
    kw["lora_targets"] = tuple(t.strip() for t in kw["lora_targets"].split(",") if t.strip())
    try:
        kw["gen_batch_sizes"] = tuple(int(t) for t in kw["gen_batch_sizes"].split(",") if t.strip())
    except ValueError:
        raise BadConfig(f"--gen-batch-sizes {kw['gen_batch_sizes']!r}: comma-separated integers") from None
    cfg = JobConfig(**kw)
    check_static(cfg)
    return cfg


def check_static(cfg: JobConfig) -> None:
    """Checks that need no model, no torch and no world."""
    if cfg.steps < 1:
        raise BadConfig(f"--steps must be >= 1 (got {cfg.steps})")
    if cfg.warmup_steps < 0:
        raise BadConfig(f"--warmup-steps must be >= 0 (got {cfg.warmup_steps})")
    if cfg.micro_batch < 0 or cfg.batch_size < 1:
        raise BadConfig("--micro-batch and --batch-size must be >= 1")
    if cfg.micro_batch and cfg.batch_size % cfg.micro_batch:
        raise BadConfig(f"--batch-size ({cfg.batch_size}) must be a multiple of --micro-batch ({cfg.micro_batch})")
    if cfg.docs_per_seq < 1:
        raise BadConfig("--docs-per-seq must be >= 1")
    if cfg.type in TRAIN_TYPES and cfg.seq_len < cfg.docs_per_seq * MIN_DOC_LEN:
        raise BadConfig(
            f"--seq-len {cfg.seq_len} is too short for {cfg.docs_per_seq} documents of at least {MIN_DOC_LEN} tokens"
        )
    if cfg.ep < 1 or cfg.cp < 1:
        raise BadConfig("--ep and --cp must be >= 1")
    if cfg.loss_chunk < 1:
        raise BadConfig("--loss-chunk must be >= 1")
    if not 0 < cfg.ratio_low < 1 < cfg.ratio_high:
        raise BadConfig("need 0 < --ratio-low < 1 < --ratio-high")
    if cfg.is_lora and not cfg.lora_targets:
        raise BadConfig("--lora-targets is empty")
    if cfg.lora_rank is not None and cfg.lora_rank < 1:
        raise BadConfig("--lora-rank must be >= 1")
    if cfg.peak_tflops is not None and cfg.peak_tflops <= 0:
        raise BadConfig("--peak-tflops must be > 0")
    if cfg.seq_len < 1:
        raise BadConfig("--seq-len must be >= 1")
    if not cfg.gen_batch_sizes or min(cfg.gen_batch_sizes) < 1:
        raise BadConfig("--gen-batch-sizes needs batch sizes >= 1")
    if cfg.new_tokens < 1 or cfg.samples < 1 or cfg.raft_cycles < 0 or cfg.temperature < 0:
        raise BadConfig("need --new-tokens >= 1, --samples >= 1, --raft-cycles >= 0, --temperature >= 0")
    if cfg.memory_limit_gib is not None and cfg.memory_limit_gib <= 0:
        raise BadConfig("--memory-limit-gib must be > 0")
    if cfg.micro_batch_auto and cfg.type not in TRAIN_TYPES:
        raise BadConfig(f"--micro-batch auto applies to the training types, not {cfg.type}")
