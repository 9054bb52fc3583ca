"""Planning: a BenchmarkRun spec -> the list of cases to run. Pure functions, no I/O.

The expansion is deterministic (matrix order, then includes) and each case has a stable id derived from
its configuration, so a restarted operator or a re-run plans exactly the same cases and names.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field, replace

from trainbench.operator.api import BenchmarkRunSpec, Pool, SpecError, parse_spec
from trainbench.trainer.config import BadConfig, parse_args
from trainbench.trainer.contract import CALIBRATE_SEQ_LEN, CALIBRATE_TYPE, LORA_TYPES, SINGLE_GPU_TYPES, TRAIN_TYPES
from trainbench.trainer.parallel.layout import validate as validate_layout
from trainbench.trainer.specs import ModelSpec, UnknownModelError, resolve_model

# The documented limits of a matrix (docs/operator.md): the product models x types x seqLens x ac x attn x ep x
# cp x pools plus the includes is counted in O(1) before anything is expanded and refused above MAX_EXPANDED;
# what is left after exclude and de-duplication is refused above MAX_CASES.
MAX_CASES = 500
MAX_EXPANDED = 10_000
# the linear layers LoRA can target in the registry's models (Hugging Face Llama/Qwen naming): attention
# projections in every model, MLP projections in dense models (an MoE model's routed experts are not adapted)
LORA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_MLP = ("gate_proj", "up_proj", "down_proj")


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
    # a repeat of a case is a case of its own for launching and collecting (its own process/Job): `of` names the
    # case it repeats, `repeat` counts from 1 (the case itself), `confirm` marks a re-run of a suspected regression
    of: str | None = None
    repeat: int = 1
    confirm: bool = False
    # a run of the case on its baseline's image, alternating with the confirming re-runs (the same window of the
    # cluster for both sides of the confirmation): its `image` is the baseline's, it measures no code of this run
    baseline: bool = False

    @property
    def base_id(self) -> str:
        return self.of or self.id

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


def _matches(sel: dict, values: dict) -> bool:
    """Whether a case (`values`) has every field an exclude entry sets (its model already canonical)."""
    return all(values[name] == want for name, want in sel.items())


def matrix_size(spec: BenchmarkRunSpec) -> int:
    """The cases the matrix expands to before exclude and de-duplication, in O(1) (list lengths only)."""
    m = spec.matrix
    pools = len(m.pools) if m.pools is not None else len(spec.pools)
    product = len(m.models) * len(m.types) * len(m.seq_lens) * len(m.ac) * len(m.attn) * len(m.ep) * len(m.cp)
    return product * pools + sum(1 if inc.pool else pools for inc in m.include)


def _resolve(name: str, where: str, model_paths: bool) -> ModelSpec:
    """The model a spec names. A path to a config.json is read only where `model_paths` (the local executor):
    the operator never opens a file a spec names."""
    if name.endswith(".json") and not model_paths:
        raise SpecError(
            where,
            f"{name!r} is a path to a model config: paths are for the local executor only (trainbench run "
            "--local); a BenchmarkRun in the cluster names a model of the registry",
        )
    try:
        model = resolve_model(name)
        _ = (model.is_moe, model.hidden, model.layers, model.heads, model.kv_heads, model.vocab)
        return model
    except UnknownModelError as e:
        raise SpecError(where, str(e)) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError) as e:
        detail = str(e).splitlines()[0][:120] if str(e) else ""
        raise SpecError(where, f"cannot use model config {name[:120]!r}: {e.__class__.__name__} {detail}") from None


def _check_lora(spec: BenchmarkRunSpec, model: ModelSpec) -> None:
    """Every LoRA target names linear layers of the model, and one at least can be adapted (the trainer refuses a
    model with no matching nn.Linear)."""
    known = LORA_ATTENTION + LORA_MLP
    for i, target in enumerate(spec.lora.targets):
        if target not in known:
            raise SpecError(
                f"spec.lora.targets[{i}]",
                f"{target!r} matches no linear layer of {model.name} (LoRA targets: {', '.join(known)})",
            )
    adaptable = LORA_ATTENTION + (() if model.is_moe and not model.config.get("mlp_only_layers") else LORA_MLP)
    if not set(spec.lora.targets) & set(adaptable):
        raise SpecError(
            "spec.lora.targets",
            f"none of {', '.join(spec.lora.targets)} can be adapted in {model.name}: "
            f"routed experts are not linear layers (use {', '.join(LORA_ATTENTION)})",
        )


def _check_context(spec: BenchmarkRunSpec, model: ModelSpec, type_: str, seq_len: int) -> None:
    """A generate case's prompt (seqLen) plus its new tokens, a verify case's new tokens, fit the model's context."""
    context = model.config.get("max_position_embeddings")
    if not isinstance(context, int):
        return
    if type_ == "generate" and seq_len + spec.generate.new_tokens > context:
        raise SpecError(
            "spec.generate.newTokens",
            f"seqLen {seq_len} + newTokens {spec.generate.new_tokens} exceeds the {context}-token context of "
            f"{model.name}",
        )
    if type_ == "verify" and spec.verify.new_tokens > context:
        raise SpecError(
            "spec.verify.newTokens",
            f"newTokens {spec.verify.new_tokens} exceeds the {context}-token context of {model.name}",
        )


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


def _check_trainer_accepts(case: Case, model: ModelSpec) -> None:
    """Refuse at plan time what the trainer would refuse at run time: the trainer's own argument parsing
    and parallel-layout checks run on the case's exact arguments (one place for each rule)."""
    try:
        cfg = parse_args(case.trainer_args())
        validate_layout(cfg, model, world_size=case.gpus)
    except BadConfig as e:
        raise SpecError("spec.matrix", f"case {case.id}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:  # a model config (local path) without the fields it needs
        raise SpecError(
            "spec.matrix.models", f"case {case.id}: model {case.model}: {e.__class__.__name__} {e}"
        ) from None


def plan(spec: BenchmarkRunSpec | dict, *, model_paths: bool = False) -> list[Case]:
    """Expand the matrix into cases; raise SpecError naming the field for anything that cannot run.
    `model_paths`: models may be paths to a config.json (the local executor only; the operator never reads a file
    a spec names). The matrix size is checked before anything is expanded (MAX_EXPANDED, MAX_CASES)."""
    if isinstance(spec, dict):
        spec = parse_spec(spec)
    pools = {p.name: p for p in spec.pools}
    m = spec.matrix

    size = matrix_size(spec)
    if size > MAX_EXPANDED:
        raise SpecError(
            "spec.matrix",
            f"the matrix expands to {size} cases before exclude; at most {MAX_EXPANDED} are allowed "
            f"(and at most {MAX_CASES} after exclude)",
        )
    pool_names = m.pools if m.pools is not None else list(pools)
    for i, name in enumerate(pool_names):
        if name not in pools:
            raise SpecError(f"spec.matrix.pools[{i}]", f"unknown pool {name!r}; defined: {', '.join(pools)}")
    models = {}
    for i, name in enumerate(m.models):
        models[name] = _resolve(name, f"spec.matrix.models[{i}]", model_paths)

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
        model = _resolve(values["model"], f"{where}.model", model_paths)
        models.setdefault(values["model"], model)
        values["model"] = model.name
        if values.get("pool") is not None and values["pool"] not in pools:
            raise SpecError(f"{where}.pool", f"unknown pool {values['pool']!r}; defined: {', '.join(pools)}")
        defaults = dict(type=m.types[0], seq_len=m.seq_lens[0], ac=m.ac[0], attn=m.attn[0], ep=m.ep[0], cp=m.cp[0])
        targets = [values["pool"]] if values.get("pool") else pool_names
        for p in targets:
            combos.append({**defaults, **values, "pool": p})

    by_name = {model.name: model for model in models.values()}
    excludes = []
    for i, x in enumerate(m.exclude):
        sel = x.model_dump(exclude_none=True)
        if "model" in sel:
            where = f"spec.matrix.exclude[{i}].model"
            sel["model"] = _resolve(sel["model"], where, model_paths).name
            if sel["model"] not in by_name:
                raise SpecError(where, f"{x.model!r} is not in the matrix (models: {', '.join(by_name)})")
        if "pool" in sel and sel["pool"] not in pool_names:
            raise SpecError(
                f"spec.matrix.exclude[{i}].pool", f"{x.pool!r} is not in the matrix (pools: {', '.join(pool_names)})"
            )
        excludes.append(sel)
    if any(t in LORA_TYPES for t in m.types) or any(inc.type in LORA_TYPES for inc in m.include):
        for model in by_name.values():
            _check_lora(spec, model)

    cases: list[Case] = []
    seen = set()
    for values in combos:
        if any(_matches(x, values) for x in excludes):
            continue
        pool = pools[values["pool"]]
        model = by_name[values["model"]]
        _check_parallelism(model, values["type"], values["ep"], values["cp"], pool, "spec.matrix")
        _check_context(spec, model, values["type"], values["seq_len"])
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
    if not cases:
        raise SpecError("spec.matrix", "the matrix plans no cases (everything excluded?)")
    if len(cases) > MAX_CASES:
        raise SpecError("spec.matrix", f"the matrix plans {len(cases)} cases; at most {MAX_CASES} are allowed")
    for case in cases:
        _check_trainer_accepts(case, by_name[case.model])
    if spec.calibrate:
        cases = calibration_cases(spec, cases) + cases
    return cases


# calibration cases (spec.calibrate): warm-up and timed runs of each kernel (trainer/calibrate.py: best of N)
CALIBRATE_WARMUP = 5
CALIBRATE_ITERS = 20


def calibration_case(spec: BenchmarkRunSpec, pool: Pool) -> Case:
    """The calibration case of a pool: one pod on 1 GPU that measures the pool's GEMM and attention ceilings
    (`--type calibrate`); its id depends on the pool and the measurement only."""
    if pool.gpus < 1:  # the schema asks for gpusPerNode >= 1; a pool without GPUs has no ceilings to measure
        raise SpecError("spec.calibrate", f"pool {pool.name!r} has no GPUs to calibrate")
    values = dict(model=CALIBRATE_TYPE, type=CALIBRATE_TYPE, seq_len=CALIBRATE_SEQ_LEN, ac="none", attn="auto")
    values.update(ep=1, cp=1, pool=pool.name)
    extra = {"iters": [CALIBRATE_WARMUP, CALIBRATE_ITERS]}
    cid = case_id(**{k if k != "type" else "type_": v for k, v in values.items()}, extra=extra)
    case = Case(
        id=cid,
        hf_name=f"trainbench/{CALIBRATE_TYPE}",
        nodes=1,
        gpus_per_node=1,
        image=pool.image,
        steps=CALIBRATE_ITERS,
        warmup_steps=CALIBRATE_WARMUP,
        micro_batch=1,
        batch_size=1,
        compile=False,
        timeout_seconds=spec.timeout_seconds,
        peak_tflops=pool.peak_tflops,
        **values,
    )
    try:  # the trainer's own parsing of the case's exact arguments
        parse_args(case.trainer_args())
    except BadConfig as e:
        raise SpecError("spec.calibrate", f"calibration case of pool {pool.name!r}: {e}") from None
    return case


def calibration_cases(spec: BenchmarkRunSpec, cases: list[Case]) -> list[Case]:
    """One calibration case per pool that the planned cases run on, in the pools' order (run before them)."""
    used = {c.pool for c in cases}
    return [calibration_case(spec, p) for p in spec.pools if p.name in used]


def is_calibration(case: Case | dict) -> bool:
    """A calibration case (spec.calibrate) rather than a model case: never judged for regressions."""
    kind = case.get("type") if isinstance(case, dict) else case.type
    return kind == CALIBRATE_TYPE


def repeat_case(case: Case, repeat: int, confirm: bool = False) -> Case:
    """Repeat `repeat` (2, 3, ...) of a case: the same case under its own id (`<id>-r<N>`) for its own Job."""
    return replace(case, id=f"{case.id}-r{repeat}", of=case.id, repeat=repeat, confirm=confirm)


def baseline_case(case: Case, k: int, image: str) -> Case:
    """The k-th run (1, 2, ...) of a case on its baseline's image, beside its confirming re-runs (`<id>-b<k>`)."""
    return replace(case, id=f"{case.id}-b{k}", of=case.id, repeat=1, confirm=False, baseline=True, image=image)


def with_repeats(
    cases: list[Case],
    repeats: int,
    confirm: dict[str, int] | None = None,
    baseline_images: dict[str, str] | None = None,
) -> list[Case]:
    """The units an executor launches, in launch order: every case once, then every case again (`repeats`
    rounds, interleaved so that a drift of the machines hits all cases alike), then `confirm[case id]` re-runs of
    each case whose regression is suspected (results/verdict.py); where `baseline_images[case id]` names the image
    the baseline was measured with, each re-run is followed by a run of that image (confirm, baseline, confirm,
    baseline, ...), so the confirmation compares the two in the same window of the cluster."""
    units = [c if r == 1 else repeat_case(c, r) for r in range(1, max(1, repeats) + 1) for c in cases]
    for c in cases:
        for k in range((confirm or {}).get(c.id, 0)):
            units.append(repeat_case(c, repeats + k + 1, confirm=True))
            if (baseline_images or {}).get(c.id):
                units.append(baseline_case(c, k + 1, baseline_images[c.id]))
    return units
