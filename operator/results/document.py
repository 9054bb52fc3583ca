"""The results document (`trainbench.dev/results/v1`): one per BenchmarkRun, written by the operator and the
local executor alike, read by the report, the CLI (`trainbench report/compare`) and baselines.

`build_results(...)` turns planned cases + per-case outcomes into the document (a plain dict, validated by
the pydantic models below); `load_results(...)` reads one back. docs/results-schema.md describes each field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainbench.operator.clock import duration, iso
from trainbench.operator.kube import CONFIGMAP_VALUE_LIMIT_BYTES
from trainbench.operator.plan import case_id
from trainbench.operator.results.keys import METRICS, hardware_label, short_gpu_name
from trainbench.operator.results.repeats import merge as merge_repeats
from trainbench.trainer.contract import CALIBRATE_TYPE, CASE_PHASES, RESULT_SCHEMA, SUMMARY_METRICS
from trainbench.trainer.specs import floor_seconds, pct_of_floor

RESULTS_SCHEMA = "trainbench.dev/results/v1"
CONFIGMAP_KEY = "results.json"  # the key of the results document in a run's result ConfigMap
REPORT_KEY = "report.md"

# per-step lists the results document does not keep (they live in the trainer's own JSON output)
_BULKY_KEYS = ("steps", "losses")


class Summary(BaseModel):
    """A metric over the measured steps (warm-up excluded)."""

    model_config = ConfigDict(extra="allow")
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    n: int | None = None


class CaseMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")
    tps: Summary | None = None  # tokens/s over all GPUs
    mfu: Summary | None = None  # percent, prime-rl's FLOPs formula (comparable with the seeds)
    mfu_done: Summary | None = None  # percent, the work actually done (causal attention within documents)
    step_time: Summary | None = None  # seconds per optimizer step
    peak_memory_gib: float | None = None  # max reserved device memory (the largest rank)
    peak_memory_pct: float | None = None
    power_w: Summary | None = None  # sum over the case's GPUs
    energy_j: float | None = None  # over the measured steps
    tokens_per_joule: float | None = None
    # wall time of the first step (a warm-up step unless warmupSteps is 0): torch.compile, autotuning and CUDA
    # start-up land here, so it is the cold-start cost (minutes without a compile cache, seconds with a warm one)
    first_step_s: float | None = None
    # type calibrate (spec.calibrate): the pool's ceilings, TFLOP/s of one GPU (trainer/calibrate.py)
    gemm_tflops: float | None = None  # the best bf16 GEMM
    attention_tflops: float | None = None  # the best SDPA backend's causal attention, forward + backward
    # model cases on a calibrated pool: floor / measured step time * 100 (mean from the mean step time; min/max
    # from the slowest/fastest step), floor = GEMM FLOPs / GEMM ceiling + attention FLOPs / attention ceiling
    pct_of_floor: Summary | None = None


class CaseResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    model: str
    hf_name: str | None = None
    type: str
    seq_len: int
    ac: str
    attn: str
    ep: int = 1
    cp: int = 1
    lora_rank: int | None = None
    pool: str
    gpus: int = 1
    hardware: str  # "8xH100 HBM3": GPU count x the pool's display name or the GPU the trainer saw
    attn_backend: str | None = None  # the attention that ran
    ac_ran: str | None = None  # the activation checkpointing that ran
    impl: str | None = None
    phase: str = Field(json_schema_extra={"enum": list(CASE_PHASES)})
    reason: str | None = None
    message: str | None = None
    node: str | None = None
    gpu: str | None = None
    driver: str | None = None
    image: str | None = None
    job: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    metrics: CaseMetrics | None = None
    flops_per_token: float | None = None
    done_flops_per_token: float | None = None  # the work actually done (specs.done_flops_split: GEMM + attention)
    done_attention_flops_per_token: float | None = None  # its attention part
    # the pool's ceilings this case's "% of floor" was computed against (its calibration case), TFLOP/s per GPU
    ceilings: dict[str, Any] | None = None
    floor_s: float | None = None  # the floor of one step: the best step time the pool can do for this work
    peak_flops: float | None = None
    peak_flops_source: str | None = None
    world_size: int | None = None
    tokens_per_step: int | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    progress: dict[str, Any] | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # the planned case (plan.Case.to_dict())
    verdicts: dict[str, Any] | None = None  # metric -> verdict.Verdict as dict (attach_verdicts)
    baseline: dict[str, Any] | None = None  # the baseline entry compared against
    trainer: dict[str, Any] | None = None  # the trainer's result JSON without per-step lists
    repro: str | None = None  # one command line that runs the case again, its image pinned by digest
    # one entry per process/pod of this case, in the order they ran (results/repeats.py); None for one run
    repeats: list[dict[str, Any]] | None = None
    verdict: dict[str, Any] | None = None  # the case's verdict per metric family (results/verdict.py)


class Counts(BaseModel):
    cases: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0
    metrics_unavailable: int = 0
    cancelled: int = 0  # cases stopped or never started because the run was cancelled (spec.cancel)
    regressions: int = 0  # cases with a Confirmed regression (results/verdict.py)
    suspected: int = 0  # cases whose regression awaits its confirming re-runs
    cleared: int = 0  # cases whose suspected regression the re-runs did not confirm
    tainted: int = 0  # cases measured in an unhealthy environment, or one unlike their baseline's


class PoolInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    gpus: int = 1
    hardware: str | None = None
    price_per_gpu_hour: float | None = None


class Results(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_: str = Field(RESULTS_SCHEMA, alias="schema")
    run: str
    suite: str
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    environment: dict[str, Any] = Field(default_factory=dict)  # commit, image, image_digest, executor, ...
    spec: dict[str, Any] = Field(default_factory=dict)  # the BenchmarkRun spec (camelCase, as applied)
    pools: list[PoolInfo] = Field(default_factory=list)
    thresholds: dict[str, float] = Field(default_factory=dict)
    summary: Counts = Field(default_factory=Counts)
    baseline: dict[str, Any] | None = None  # {source, description} once verdicts are attached
    cases: list[CaseResult] = Field(default_factory=list)


class ResultsError(ValueError):
    """A results document that cannot be read."""


# --- helpers -------------------------------------------------------------------------------------------


def _summary(value: Any) -> dict | None:
    if isinstance(value, dict):
        return {k: value.get(k) for k in ("mean", "std", "min", "max", "n") if k in value} or None
    if isinstance(value, (int, float)):
        return {"mean": float(value), "std": 0.0, "min": float(value), "max": float(value), "n": 1}
    return None


# a measurement above this is not a measurement (1e308 from a broken trainer): tokens/s, percent, seconds, bytes
MAX_MEASUREMENT = 1e15


def _bad_number(value: Any) -> str | None:
    """Why `value` is not a measurement (None when it is one, or absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{type(value).__name__} {json.dumps(value)[:40]} where a number belongs"
    if value != value or value in (float("inf"), float("-inf")):
        return f"non-finite value {value}"
    if value < 0:
        return f"negative value {value}"
    if value > MAX_MEASUREMENT:
        return f"implausible value {value:g}"
    return None


def result_problem(result: Any) -> str | None:
    """Why a trainer's result JSON (a termination message, a stdout line) cannot be used as a measurement, or
    None when it can. Checked on the way in, with the typed models: the metrics blocks are `Summary` objects of
    finite, non-negative, plausible numbers (no booleans, strings, lists); `environment`, `config` and `error`
    have their shapes; a result that is not a failure reports at least one of contract.SUMMARY_METRICS."""
    if not isinstance(result, dict):
        return f"the result is {type(result).__name__}, not a JSON object"
    if not result:
        return "the result is an empty object"
    for key in ("environment", "config", "parallel"):
        if result.get(key) is not None and not isinstance(result[key], dict):
            return f"{key} is {type(result[key]).__name__}, not an object"
    if result.get("error") is not None and not isinstance(result["error"], (str, dict)):
        return f"error is {type(result['error']).__name__}, not a string or object"
    if result.get("status") is not None and not isinstance(result["status"], str):
        return f"status is {type(result['status']).__name__}, not a string"
    metrics = result.get("metrics")
    if metrics is not None and not isinstance(metrics, dict):
        return f"metrics is {type(metrics).__name__}, not an object"
    metrics = metrics or {}
    blocks = {name: metrics.get(name) for name in SUMMARY_METRICS} | {"power_w": result.get("power_w")}
    measured = False
    for name, block in blocks.items():
        if block is None:
            continue
        if not isinstance(block, dict):
            why = _bad_number(block)
            if why:
                return f"metrics.{name}: {why}"
            measured = measured or name in SUMMARY_METRICS
            continue
        for key in ("mean", "std", "min", "max", "n"):
            why = _bad_number(block.get(key))
            if why:
                return f"metrics.{name}.{key}: {why}"
        try:
            Summary.model_validate(block, strict=True)
        except ValidationError as e:
            err = e.errors()[0]
            return f"metrics.{name}.{'.'.join(map(str, err['loc']))}: {err['msg'][:120]}"
        measured = measured or (name in SUMMARY_METRICS and block.get("mean") is not None)
    for key in ("peak_memory_gib", "peak_memory_pct", "energy_j", "tokens_per_joule", "first_step_s"):
        why = _bad_number(result.get(key))
        if why:
            return f"{key}: {why}"
    for key in ("flops_per_token", "peak_flops"):
        why = _bad_number(result.get(key))
        if why and not why.startswith("implausible"):  # FLOP counts are large on purpose
            return f"{key}: {why}"
    cal = result.get("calibration")  # type calibrate: the device's ceilings are its measurement
    if cal is not None and not isinstance(cal, dict):
        return f"calibration is {type(cal).__name__}, not an object"
    for key in ("gemm_tflops", "attention_tflops") if cal else ():
        why = _bad_number(cal.get(key))
        if why:
            return f"calibration.{key}: {why}"
    measured = measured or bool(cal and cal.get("gemm_tflops") and cal.get("attention_tflops"))
    if not measured and result.get("status") != "failed":
        return "the result reports no metric (" + ", ".join(SUMMARY_METRICS) + ", or a calibration)"
    return None


def first_step_seconds(result: dict | None) -> float | None:
    """The first step's wall time of a trainer result: its top-level `first_step_s` (kept when the termination
    message drops the per-step list to fit its 4 KiB), else `steps[0].step_time` (older trainers); None for
    generate/verify results."""
    top = (result or {}).get("first_step_s")  # trainers from this version on report it at the top level
    if isinstance(top, (int, float)) and not isinstance(top, bool):
        return float(top)
    steps = (result or {}).get("steps")
    first = steps[0] if isinstance(steps, list) and steps and isinstance(steps[0], dict) else {}
    value = first.get("step_time")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metrics_from_result(result: dict | None, progress: dict | None = None) -> dict | None:
    """The metrics block of a case from the trainer's result JSON (and live progress as a fallback)."""
    if not result and not progress:
        return None
    result = result or {}
    src = result.get("metrics") or {}
    out: dict[str, Any] = {}
    for name in SUMMARY_METRICS:
        out[name] = _summary(src.get(name))
    if src.get("mfu_done") is not None:  # trainers from this version on: the MFU of the work actually done
        out["mfu_done"] = _summary(src.get("mfu_done"))
    out["peak_memory_gib"] = result.get("peak_memory_gib")
    if out["peak_memory_gib"] is None and progress and progress.get("peak_memory_bytes"):
        out["peak_memory_gib"] = progress["peak_memory_bytes"] / 2**30
    out["peak_memory_pct"] = result.get("peak_memory_pct")
    out["power_w"] = _summary(result.get("power_w"))
    out["energy_j"] = result.get("energy_j")
    out["tokens_per_joule"] = result.get("tokens_per_joule")
    out["first_step_s"] = first_step_seconds(result)
    cal = result.get("calibration")
    if isinstance(cal, dict):  # type calibrate: the device's ceilings
        for key in ("gemm_tflops", "attention_tflops"):
            out[key] = cal.get(key) if _bad_number(cal.get(key)) is None else None
    if all(v is None for v in out.values()):
        return None
    return out


def _outcome_metrics(outcome: dict) -> dict | None:
    result = outcome.get("result") if isinstance(outcome.get("result"), dict) else None
    return metrics_from_result(result, outcome.get("progress"))


def _spec_dict(spec: Any) -> dict:
    if spec is None:
        return {}
    if hasattr(spec, "model_dump"):
        return spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dict(spec)


def _case_dict(case: Any) -> dict:
    if hasattr(case, "to_dict"):
        return case.to_dict()
    return dict(case)


def _pools(spec: Any) -> list[dict]:
    pools = getattr(spec, "pools", None)
    if pools is None and isinstance(spec, dict):
        pools = spec.get("pools") or []
    out = []
    for p in pools or []:
        if hasattr(p, "model_dump"):
            out.append(
                {"name": p.name, "gpus": p.gpus, "hardware": p.hardware, "price_per_gpu_hour": p.price_per_gpu_hour}
            )
        else:
            gpus = int(p.get("gpusPerNode", p.get("gpus_per_node", 1))) * int(p.get("nodes", 1))
            price = p.get("pricePerGPUHour", p.get("price_per_gpu_hour"))
            out.append({"name": p["name"], "gpus": gpus, "hardware": p.get("hardware"), "price_per_gpu_hour": price})
    return out


def _thresholds(spec: Any) -> dict[str, float]:
    th = getattr(spec, "thresholds", None)
    if th is not None and hasattr(th, "for_metric"):
        return {m: th.for_metric(m) for m in METRICS} | {"default": th.default}
    if isinstance(spec, dict) and isinstance(spec.get("thresholds"), dict):
        raw = spec["thresholds"]
        return {re.sub(r"([A-Z])", r"_\1", k).lower(): float(v) for k, v in raw.items()}
    return {}


def counts(cases: list[dict]) -> dict:
    c = {"cases": len(cases), "succeeded": 0, "failed": 0, "skipped": 0, "pending": 0, "metrics_unavailable": 0}
    for case in cases:
        phase = case.get("phase")
        if phase == "Succeeded":
            c["succeeded"] += 1
        elif phase == "Failed":
            c["failed"] += 1
        elif phase == "Skipped":
            c["skipped"] += 1
        elif phase == "MetricsUnavailable":
            c["metrics_unavailable"] += 1
        elif phase == "Cancelled":
            c["cancelled"] = c.get("cancelled", 0) + 1
        else:
            c["pending"] += 1
    states = [(case.get("verdict") or {}).get("state") for case in cases]
    c["regressions"] = states.count("confirmed")  # cases; only Confirmed regressions count and alert
    c["suspected"] = states.count("suspected")
    c["cleared"] = states.count("cleared")
    c["tainted"] = sum(1 for case in cases if (case.get("verdict") or {}).get("tainted"))
    return c


def build_case(case: Any, outcome: dict | None, pool: dict | None = None) -> dict:
    """One case of the results document from a planned case and its outcome."""
    cfg = _case_dict(case)
    outcome = dict(outcome or {})
    repeat_entries = combined = None
    if outcome.get("repeats"):  # several processes/pods of this case (results/repeats.py)
        outcome, combined, repeat_entries = merge_repeats(outcome["repeats"], _outcome_metrics)
    result = outcome.get("result") if isinstance(outcome.get("result"), dict) else None
    env = dict((result or {}).get("environment") or {})
    gpus = int(cfg.get("gpus") or cfg.get("nodes", 1) * cfg.get("gpus_per_node", 1))
    gpu_seen = outcome.get("gpu") or env.get("gpu_name")
    name = (pool or {}).get("hardware") or short_gpu_name(gpu_seen)
    if name is None and result is not None and (env.get("gpu_count") == 0 or result.get("device") == "cpu"):
        name = "CPU"
    if name is None and result is not None and (result.get("config") or {}).get("device") == "cpu":
        name = "CPU"
    trainer = {k: v for k, v in result.items() if k not in _BULKY_KEYS} if result else None
    started, finished = iso(outcome.get("started_at")), iso(outcome.get("finished_at"))
    doc = {
        "id": cfg["id"],
        "model": cfg["model"],
        "hf_name": cfg.get("hf_name"),
        "type": cfg["type"],
        "seq_len": cfg["seq_len"],
        "ac": cfg["ac"],
        "attn": cfg["attn"],
        "ep": cfg.get("ep", 1),
        "cp": cfg.get("cp", 1),
        "lora_rank": cfg.get("lora_rank"),
        "pool": cfg["pool"],
        "gpus": gpus,
        "hardware": hardware_label(gpus, name),
        "attn_backend": (result or {}).get("attn_backend"),
        "ac_ran": (result or {}).get("ac"),
        "impl": (result or {}).get("impl"),
        "phase": outcome.get("phase") or "Pending",
        "reason": outcome.get("reason"),
        "message": outcome.get("message"),
        "node": outcome.get("node") or env.get("hostname"),
        "gpu": gpu_seen,
        "driver": outcome.get("driver") or env.get("driver"),
        "image": outcome["image"] if "image" in outcome else cfg.get("image"),
        "job": outcome.get("job"),
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration(started, finished),
        "metrics": combined if repeat_entries else metrics_from_result(result, outcome.get("progress")),
        "repeats": repeat_entries,
        "flops_per_token": (result or {}).get("flops_per_token"),
        "done_flops_per_token": (result or {}).get("done_flops_per_token"),
        "done_attention_flops_per_token": (result or {}).get("done_attention_flops_per_token"),
        "peak_flops": (result or {}).get("peak_flops"),
        "peak_flops_source": (result or {}).get("peak_flops_source"),
        "world_size": (result or {}).get("world_size"),
        "tokens_per_step": (result or {}).get("tokens_per_step"),
        "environment": {**env, **(outcome.get("provenance") or {})},  # the trainer's, and the image digest
        "repro": outcome.get("repro"),  # one line that runs the case again (kube.repro_command)
        "progress": outcome.get("progress"),
        "config": cfg,
        "trainer": trainer,
    }
    return CaseResult.model_validate(doc).model_dump(mode="json")


def build_results(
    run: str,
    suite: str,
    spec: Any,
    cases: list,
    outcomes: dict[str, dict],
    started_at: datetime | str | float | None,
    finished_at: datetime | str | float | None,
    environment: dict | None,
) -> dict:
    """The results document of one BenchmarkRun.

    `spec`: the BenchmarkRunSpec (or its dict); `cases`: plan.Case list; `outcomes`: case id -> {phase,
    reason, message, result (trainer JSON or None), progress, node, gpu, driver, image, job, started_at,
    finished_at} (missing cases are Pending); `environment`: run-level facts (commit, image, image_digest,
    executor, ...). Returns a JSON-ready dict."""
    pools = _pools(spec)
    by_name = {p["name"]: p for p in pools}
    docs = [build_case(c, outcomes.get(_case_dict(c)["id"]), by_name.get(_case_dict(c)["pool"])) for c in cases]
    attach_floors(docs)
    started, finished = iso(started_at), iso(finished_at)
    doc = {
        "schema": RESULTS_SCHEMA,
        "run": run,
        "suite": suite or run,
        "started_at": started,
        "finished_at": finished,
        "duration_s": duration(started, finished),
        "environment": dict(environment or {}),
        "spec": _spec_dict(spec),
        "pools": pools,
        "thresholds": _thresholds(spec),
        "summary": counts(docs),
        "baseline": None,
        "cases": docs,
    }
    return validate(doc)


def pool_ceilings(cases: list[dict]) -> dict[str, dict]:
    """pool -> {gemm_tflops, attention_tflops, case} from the pools' successful calibration cases."""
    out = {}
    for c in cases:
        m = c.get("metrics") or {}
        ok = c.get("type") == CALIBRATE_TYPE and c.get("phase") == "Succeeded"
        if ok and m.get("gemm_tflops") and m.get("attention_tflops"):
            out[c["pool"]] = {
                "gemm_tflops": m["gemm_tflops"],
                "attention_tflops": m["attention_tflops"],
                "case": c["id"],
            }
    return out


def case_floor(case: dict, ceilings: dict) -> float | None:
    """The floor of one step of a model case (seconds): its done work per GPU priced at the pool's ceilings
    (specs.floor_seconds); None where the trainer did not report the split of its work."""
    done, attn = case.get("done_flops_per_token"), case.get("done_attention_flops_per_token")
    tokens, world = case.get("tokens_per_step"), case.get("world_size") or case.get("gpus") or 1
    if not done or attn is None or not tokens:
        return None
    per_gpu = tokens / world
    gemm_ceiling, attn_ceiling = ceilings["gemm_tflops"] * 1e12, ceilings["attention_tflops"] * 1e12
    return floor_seconds((done - attn) * per_gpu, attn * per_gpu, gemm_ceiling, attn_ceiling)


def attach_floors(cases: list[dict]) -> None:
    """Each model case on a calibrated pool gets `ceilings`, `floor_s` and `metrics.pct_of_floor` (in place)."""
    ceilings = pool_ceilings(cases)
    for c in cases:
        ceil = ceilings.get(c.get("pool"))
        step = ((c.get("metrics") or {}).get("step_time") or {}) if ceil else {}
        if c.get("type") == CALIBRATE_TYPE or c.get("phase") != "Succeeded" or not step.get("mean"):
            continue
        c["ceilings"] = ceil
        floor = c["floor_s"] = case_floor(c, ceil)
        if floor is None:
            continue
        pct = {"mean": pct_of_floor(floor, step["mean"])}
        if step.get("min") and step.get("max"):  # the fastest step is the highest share of the floor
            pct.update(min=pct_of_floor(floor, step["max"]), max=pct_of_floor(floor, step["min"]))
        c["metrics"]["pct_of_floor"] = pct


def validate(doc: dict) -> dict:
    """Check a results document against the schema; return it normalised (JSON-ready)."""
    if not isinstance(doc, dict):
        raise ResultsError("a results document must be a JSON object")
    schema = doc.get("schema")
    if schema != RESULTS_SCHEMA:
        raise ResultsError(f"not a trainbench results document (schema {schema!r}, expected {RESULTS_SCHEMA!r})")
    try:
        return Results.model_validate(doc).model_dump(mode="json", by_alias=True)
    except Exception as e:  # pydantic.ValidationError: say which field
        raise ResultsError(f"invalid results document: {e}") from None


def is_results(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == RESULTS_SCHEMA


def load_results(source: str | Path | dict) -> dict:
    """A results document from a dict, a JSON string, a results.json file or a folder holding one."""
    if isinstance(source, dict):
        return validate(source)
    text = str(source)
    if text.lstrip().startswith("{"):
        return validate(json.loads(text))
    path = Path(source)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file") from None
    except ValueError as e:
        raise ResultsError(f"{path}: not JSON ({e})") from None
    try:
        return validate(data)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None


def write_results(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


TRIM_NOTE_KEY = "trimmed"  # in a ConfigMap's results document: what was dropped to fit the size limit


def configmap_text(doc: dict, limit_bytes: int = CONFIGMAP_VALUE_LIMIT_BYTES) -> str:
    """results.json for a ConfigMap: compact, and under the ConfigMap size limit (kube.py) whatever the matrix:
    a very large run drops, step by step, each case's copy of the trainer JSON (its numbers are in `metrics`
    already), the per-case environment, live progress and planned config, then cuts failure messages (log
    tails) to 300 and then 80 characters. What was dropped is listed under `trimmed` (the report says so).
    Raises ResultsError only when even the trimmed document does not fit."""
    text = json.dumps(doc, separators=(",", ":"))
    trimmed: list[str] = []
    steps = (
        ("trainer", "per-case trainer JSON", lambda c: {**c, "trainer": None}),
        ("environment", "per-case environment", lambda c: {**c, "environment": {}}),
        ("progress", "per-case live progress", lambda c: {**c, "progress": None}),
        ("config", "per-case planned config", lambda c: {**c, "config": {}}),
        ("message300", "messages cut to 300 characters", lambda c: {**c, "message": _cut(c.get("message"), 300)}),
        ("message80", "messages cut to 80 characters", lambda c: {**c, "message": _cut(c.get("message"), 80)}),
    )
    for _key, what, trim in steps:
        if len(text.encode()) <= limit_bytes:
            break
        trimmed.append(what)
        doc = {**doc, "cases": [trim(c) for c in doc["cases"]], TRIM_NOTE_KEY: list(trimmed)}
        text = json.dumps(doc, separators=(",", ":"))
    if len(text.encode()) > limit_bytes:
        raise ResultsError(f"the results document is {len(text.encode())} bytes even trimmed (limit {limit_bytes})")
    return text


def _cut(message: str | None, chars: int) -> str | None:
    if not message or len(message) <= chars:
        return message
    return message[: chars - 1] + "…"


def schema_json() -> dict:
    """The JSON Schema of the results document (docs/results-schema.md is generated from the same models)."""
    return Results.model_json_schema(by_alias=True)


def from_trainer_results(docs: list[dict], run: str | None = None) -> dict:
    """A results document from the trainer's own result JSON files (`trainbench bench --output FILE`), so a
    handful of hand-run benches render as one report. Cases come from each result's `config`."""
    cases, outcomes = [], {}
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("schema") != RESULT_SCHEMA:
            raise ResultsError(f"document {i}: not a trainer result (schema {RESULT_SCHEMA!r})")
        cfg = dict(doc.get("config") or {})
        if not cfg.get("model"):
            raise ResultsError(
                f"document {i}: the trainer result has no config (it failed before parsing its arguments)"
            )
        pool = cfg.get("pool") or ("cpu" if cfg.get("device") == "cpu" else "local")
        keys = ("model", "type", "seq_len", "ac", "attn", "ep", "cp")
        cid = cfg.get("case") or case_id(*(cfg.get(k) for k in keys), pool, {"lora": cfg.get("lora_rank")})
        case = {k: cfg.get(k) for k in (*keys, "hf_name", "lora_rank", "image")}
        case.update(id=cid, pool=pool, gpus=doc.get("world_size") or 1)
        if case["type"] != "rl-lora":
            case["lora_rank"] = None
        cases.append(case)
        err = doc.get("error") if isinstance(doc.get("error"), dict) else {}
        ok = doc.get("status") == "ok"
        outcomes[cid] = {
            "phase": "Succeeded" if ok else "Failed",
            "reason": None if ok else (err.get("reason") or "Error"),
            "message": "" if ok else (err.get("message") or ""),
            "result": doc,
        }
    runs = sorted({c.get("run") for c in (d.get("config") or {} for d in docs) if c.get("run")})
    name = run or (runs[0] if len(runs) == 1 else "bench")
    return build_results(name, name, None, cases, outcomes, None, None, {"executor": "bench"})
