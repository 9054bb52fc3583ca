"""Planning: a BenchmarkRun spec -> the list of cases to run. Pure functions, no I/O.

The expansion is deterministic (matrix order, then includes) and each case has a stable id derived from
its configuration, so a restarted operator or a re-run plans exactly the same cases and names.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field

from trainbench.operator.api import BenchmarkRunSpec, CaseSelector, Pool, SpecError, parse_spec
from trainbench.trainer.config import BadConfig, parse_args
from trainbench.trainer.contract import LORA_TYPES, SINGLE_GPU_TYPES, TRAIN_TYPES
from trainbench.trainer.parallel.layout import validate as validate_layout
from trainbench.trainer.specs import UnknownModelError, resolve_model

MAX_CASES = 500


@dataclass(frozen=True)
class Case:
    """One benchmark case: a model, a training type and a shape on one pool."""

    id: str
    model: str  # canonical short name (qwen3-0.6b)
    hf_name: str  # Qwen/Qwen3-0.6B
    type: str
    seq_len: int
    ac: str
    attn: str
    ep: int
    cp: int
    pool: str
    nodes: int
    gpus_per_node: int
    image: str
    steps: int
    warmup_steps: int
    micro_batch: int
    batch_size: int
    compile: bool
    timeout_seconds: int
    peak_tflops: float | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = field(default_factory=tuple)
    micro_batch_auto: bool = False  # --micro-batch auto (training types)
    type_args: tuple[str, ...] = field(default_factory=tuple)  # trainer options of the type (generate, verify, auto)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_targets"] = list(self.lora_targets)
        d["type_args"] = list(self.type_args)
        d["gpus"] = self.gpus
        return d

    def trainer_args(self, run: str = "", metrics_port: int | None = None) -> list[str]:
        """Arguments for `python -m trainbench.trainer` (after torchrun's own)."""
        args = [
            "--model", self.model,
            "--type", self.type,
            "--seq-len", str(self.seq_len),
            "--ac", self.ac,
            "--attn", self.attn,
            "--ep", str(self.ep),
            "--cp", str(self.cp),
            "--steps", str(self.steps),
            "--warmup-steps", str(self.warmup_steps),
            "--micro-batch", "auto" if self.micro_batch_auto else str(self.micro_batch),
            "--batch-size", str(self.batch_size),
            "--compile" if self.compile else "--no-compile",
            "--case", self.id,
            "--pool", self.pool,
        ]  # fmt: skip
        if run:
            args += ["--run-name", run]  # not `--run`: torchrun would take it for an abbreviation of --run-path
        if self.peak_tflops:
            args += ["--peak-tflops", repr(self.peak_tflops)]
        if self.lora_rank:
            args += ["--lora-rank", str(self.lora_rank), "--lora-alpha", repr(self.lora_alpha)]
            args += ["--lora-targets", ",".join(self.lora_targets)]
        args += list(self.type_args)
        if metrics_port is not None:
            args += ["--metrics-port", str(metrics_port)]
        return args


def type_args(spec: BenchmarkRunSpec, type_: str) -> tuple[str, ...]:
    """The trainer options a case of `type_` gets from the spec's generate/verify blocks and autoMicroBatch."""
    if type_ == "generate":
        g = spec.generate
        return (
            "--gen-batch-sizes", ",".join(map(str, g.batch_sizes)),
            "--new-tokens", str(g.new_tokens),
            "--temperature", repr(g.temperature),
            "--no-cache-batch", str(g.no_cache_batch),
        )  # fmt: skip
    if type_ == "verify":
        v = spec.verify
        return (
            "--samples", str(v.samples),
            "--new-tokens", str(v.new_tokens),
            "--temperature", repr(v.temperature),
            "--raft-cycles", str(v.raft_cycles),
            "--run-timeout", repr(v.run_timeout_seconds),
            "--run-memory-mib", str(v.run_memory_mib),
        )  # fmt: skip
    if spec.auto_micro_batch and type_ in TRAIN_TYPES and spec.memory_limit_gib:
        return ("--memory-limit-gib", repr(spec.memory_limit_gib))
    return ()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def case_id(model: str, type_: str, seq_len: int, ac: str, attn: str, ep: int, cp: int, pool: str, extra: dict) -> str:
    """Readable and stable: `qwen3-0-6b-sft-full-8k-recompute-auto-h100-1a2b3c`, at most 63 chars."""
    canon = json.dumps([model, type_, seq_len, ac, attn, ep, cp, pool, extra], sort_keys=True)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:6]
    seq = f"{seq_len // 1024}k" if seq_len % 1024 == 0 else str(seq_len)
    par = (f"-ep{ep}" if ep > 1 else "") + (f"-cp{cp}" if cp > 1 else "")
    head = _slug(f"{model}-{type_}-{seq}-{ac}-{attn}{par}-{pool}")
    return f"{head[: 63 - 7].rstrip('-')}-{digest}"


def _matches(sel: CaseSelector, values: dict) -> bool:
    for name, want in sel.model_dump(exclude_none=True).items():
        have = values[name]
        if name == "model":
            try:
                want = resolve_model(want).name
            except UnknownModelError:
                return False
        if have != want:
            return False
    return True


def _check_parallelism(spec_model, type_: str, ep: int, cp: int, pool: Pool, where: str) -> None:
    if ep > 1 and not spec_model.is_moe:
        raise SpecError(where, f"ep={ep} needs a mixture-of-experts model; {spec_model.name} is dense")
    if ep > 1 and spec_model.config["num_experts"] % ep:
        raise SpecError(
            where, f"ep={ep} must divide the {spec_model.config['num_experts']} experts of {spec_model.name}"
        )
    for name, degree in (("ep", ep), ("cp", cp)):
        if pool.gpus % degree:
            raise SpecError(where, f"{name}={degree} does not divide the {pool.gpus} GPUs of pool {pool.name!r}")


def _check_trainer_accepts(case: Case) -> None:
    """Refuse at plan time what the trainer would refuse at run time: the trainer's own argument parsing
    and parallel-layout checks run on the case's exact arguments (one place for each rule)."""
    try:
        cfg = parse_args(case.trainer_args())
        validate_layout(cfg, resolve_model(case.model), world_size=case.gpus)
    except BadConfig as e:
        raise SpecError("spec.matrix", f"case {case.id}: {e}") from None


def plan(spec: BenchmarkRunSpec | dict) -> list[Case]:
    """Expand the matrix into cases; raise SpecError naming the field for anything that cannot run."""
    if isinstance(spec, dict):
        spec = parse_spec(spec)
    pools = {p.name: p for p in spec.pools}
    m = spec.matrix

    pool_names = m.pools if m.pools is not None else list(pools)
    for i, name in enumerate(pool_names):
        if name not in pools:
            raise SpecError(f"spec.matrix.pools[{i}]", f"unknown pool {name!r}; defined: {', '.join(pools)}")
    models = {}
    for i, name in enumerate(m.models):
        try:
            models[name] = resolve_model(name)
        except UnknownModelError as e:
            raise SpecError(f"spec.matrix.models[{i}]", str(e)) from None

    combos = [
        dict(model=models[mo].name, type=t, seq_len=s, ac=a, attn=at, ep=e, cp=c, pool=p)
        for mo, t, s, a, at, e, c, p in itertools.product(
            m.models, m.types, m.seq_lens, m.ac, m.attn, m.ep, m.cp, pool_names
        )
    ]
    for i, inc in enumerate(m.include):
        where = f"spec.matrix.include[{i}]"
        values = inc.model_dump(exclude_none=True)
        if "model" not in values:
            raise SpecError(where, "an include needs at least a model")
        try:
            values["model"] = resolve_model(values["model"]).name
        except UnknownModelError as e:
            raise SpecError(f"{where}.model", str(e)) from None
        if values.get("pool") is not None and values["pool"] not in pools:
            raise SpecError(f"{where}.pool", f"unknown pool {values['pool']!r}; defined: {', '.join(pools)}")
        defaults = dict(type=m.types[0], seq_len=m.seq_lens[0], ac=m.ac[0], attn=m.attn[0], ep=m.ep[0], cp=m.cp[0])
        targets = [values["pool"]] if values.get("pool") else pool_names
        for p in targets:
            combos.append({**defaults, **values, "pool": p})

    cases: list[Case] = []
    seen = set()
    for values in combos:
        if any(_matches(x, values) for x in m.exclude):
            continue
        pool = pools[values["pool"]]
        model = resolve_model(values["model"])
        _check_parallelism(model, values["type"], values["ep"], values["cp"], pool, "spec.matrix")
        lora = values["type"] in LORA_TYPES
        extra = {"lora": [spec.lora.rank, spec.lora.alpha, sorted(spec.lora.targets)] if lora else None}
        targs = type_args(spec, values["type"])
        auto_mb = spec.auto_micro_batch and values["type"] in TRAIN_TYPES
        if targs:  # only these cases' ids depend on their settings: training ids stay as they were
            extra["args"] = list(targs)
        if auto_mb:
            extra["micro_batch"] = "auto"
        cid = case_id(**{k if k != "type" else "type_": v for k, v in values.items()}, extra=extra)
        if cid in seen:
            continue
        seen.add(cid)
        cases.append(
            Case(
                id=cid,
                hf_name=model.hf_name,
                nodes=1 if values["type"] in SINGLE_GPU_TYPES else pool.nodes,
                gpus_per_node=1 if values["type"] in SINGLE_GPU_TYPES else pool.gpus_per_node,
                image=pool.image,
                steps=spec.steps,
                warmup_steps=spec.warmup_steps,
                micro_batch=spec.micro_batch,
                batch_size=spec.batch_size,
                compile=spec.compile,
                timeout_seconds=spec.timeout_seconds,
                peak_tflops=pool.peak_tflops,
                lora_rank=spec.lora.rank if lora else None,
                lora_alpha=spec.lora.alpha if lora else None,
                lora_targets=tuple(spec.lora.targets) if lora else (),
                micro_batch_auto=auto_mb,
                type_args=targs,
                **values,
            )
        )
    for case in cases:
        _check_trainer_accepts(case)
    if not cases:
        raise SpecError("spec.matrix", "the matrix plans no cases (everything excluded?)")
    if len(cases) > MAX_CASES:
        raise SpecError("spec.matrix", f"the matrix plans {len(cases)} cases; at most {MAX_CASES} are allowed")
    return cases
