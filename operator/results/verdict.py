"""Verdicts: one statistical verdict per case and metric family, against the case's baseline.

Families: `throughput` (TPS, MFU and step time come from one measurement: one verdict, judged on TPS, else step
time, else MFU), `memory` (peak memory) and `energy` (tokens per joule), each judged on its own.

Per family (stats.compare on the repeats of both sides, module docstring there):
1. no current value -> "missing"; no baseline value -> "new";
2. |change| < SHOW_PCT (1%) -> "same" (not shown);
3. not significant (Welch's t-test / z-test over both variance sources, and beyond twice the run-to-run
   spread) -> "noise" (shown as `~noise`, never a regression); peak memory is deterministic and is judged on
   the threshold alone;
4. worse than the metric's threshold (default 5%) -> "regression"; better -> "improvement"; else "changed";
5. a tainted case (results/taint.py: unhealthy environment, or one that differs from its baseline's) is
   "tainted" instead of a regression or an improvement.

Regressions are first Suspected. A case whose suspected regression was re-run (`confirm` repeats) and still
regresses is Confirmed, one whose re-runs do not is Cleared; with `confirm=0` a regression is Confirmed at once.
Only Confirmed regressions count (`summary.regressions`, in cases) and alert.

Every metric of a family carries the family's status with its own change: TPS, MFU and step time never
disagree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from trainbench.operator.results import stats as S
from trainbench.operator.results import taint as T
from trainbench.operator.results.document import counts
from trainbench.operator.results.keys import METRIC_LABELS, METRICS
from trainbench.operator.results.repeats import samples as repeat_samples

LABELS = METRIC_LABELS
HIGHER_IS_BETTER = {"mfu": True, "tps": True, "step_time": False, "peak_memory": False, "tokens_per_joule": True}
DEFAULT_THRESHOLD = 5.0  # percent
SHOW_PCT = 1.0  # percent: smaller changes are not shown

FAMILIES = {"throughput": ("tps", "step_time", "mfu"), "memory": ("peak_memory",), "energy": ("tokens_per_joule",)}
STATUSES = ("regression", "improvement", "changed", "noise", "same", "new", "missing", "tainted")
_RESULT_KEY = {"peak_memory": "peak_memory_gib"}  # verdict metric -> results-document metrics key


@dataclass(frozen=True)
class Verdict:
    """How one metric of a case compares with its baseline (the report's cells); the status is its family's."""

    metric: str
    status: str  # one of STATUSES
    current: float | None
    baseline: float | None
    change_pct: float | None  # (current - baseline) / baseline, percent, signed
    threshold: float
    higher_is_better: bool
    spread: float | None = None  # combined step-to-step std of both sides (metric units); None if unknown
    p_value: float | None = None  # of the family's test
    noise_pct: float | None = None  # the family's guard band (percent)
    state: str | None = None  # suspected | confirmed | cleared (regressions and re-run cases)

    @property
    def shown(self) -> bool:
        return self.status in ("regression", "improvement", "changed", "noise", "tainted")

    def to_dict(self) -> dict:
        return asdict(self)


def metric_value(metrics: dict | None, metric: str) -> tuple[float | None, float | None]:
    """(value, step-to-step std) of a metric from a results-document metrics block; std None when unmeasured."""
    if not metrics:
        return None, None
    v = metrics.get(_RESULT_KEY.get(metric, metric))
    if isinstance(v, dict):
        return v.get("mean"), v.get("std")
    if metric == "tokens_per_joule" and v is not None:
        tps, power = metrics.get("tps") or {}, metrics.get("power_w") or {}
        rel = [
            s.get("std") / s.get("mean")
            for s in (tps, power)
            if s.get("std") is not None and s.get("mean") not in (None, 0)
        ]
        return v, (v * math.sqrt(sum(r * r for r in rel)) if len(rel) == 2 else None)
    return v, None


def thresholds_for(thresholds: dict | Any | None) -> dict[str, float]:
    """Per-metric thresholds (percent) from a dict {metric: pct, default: pct} or an api.Thresholds."""
    if thresholds is None:
        return dict.fromkeys(METRICS, DEFAULT_THRESHOLD)
    if hasattr(thresholds, "for_metric"):
        return {m: thresholds.for_metric(m) for m in METRICS}
    default = thresholds.get("default") or DEFAULT_THRESHOLD
    return {m: float(thresholds.get(m) or default) for m in METRICS}


def _status(
    metric: str, comparison: S.Comparison, threshold: float, show_pct: float = SHOW_PCT, deterministic=False
) -> str:
    change = comparison.change_pct
    if comparison.current is None:
        return "missing"
    if change is None:
        return "new"
    if abs(change) < show_pct:
        return "same"
    if not deterministic and not comparison.significant:
        return "noise"
    worse = -change if HIGHER_IS_BETTER[metric] else change
    if worse > threshold:
        return "regression"
    if -worse > threshold:
        return "improvement"
    return "changed"


def judge(
    metric: str,
    current: float | list | None,
    baseline: float | list | None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    current_std: float | None = None,
    baseline_std: float | None = None,
    show_pct: float = SHOW_PCT,
    noise_floor: float = S.DEFAULT_NOISE_FLOOR,
) -> Verdict:
    """The verdict on one metric from its repeats on each side (a number is one repeat; a list is several;
    entries may be {mean, std, n} summaries); `noise_floor`: the device's least run-to-run spread (stats)."""

    def side(v, std):
        if v is None:
            return S.Samples.of([])
        if isinstance(v, list | tuple):
            return S.Samples.of(v)
        return S.Samples.of([{"mean": v, "std": std, "n": 1} if std is not None else v])

    cur, base = side(current, current_std), side(baseline, baseline_std)
    comp = S.compare(cur, base, noise_floor=noise_floor)
    status = _status(metric, comp, threshold, show_pct, deterministic=metric == "peak_memory")
    stds = [s for s in (cur.step_std, base.step_std) if s is not None]
    spread = (sum(s * s for s in stds) ** 0.5) if len(stds) == 2 else None
    return Verdict(
        metric,
        status,
        comp.current,
        comp.baseline,
        comp.change_pct,
        threshold,
        HIGHER_IS_BETTER[metric],
        spread,
        comp.p_value,
        comp.noise_pct,
    )


def _side_samples(case_or_entry: dict, metric: str) -> list:
    """Per-repeat values of a metric: a case's repeats, a baseline entry's pooled samples, else its one value."""
    pooled = (case_or_entry.get("samples") or {}).get(metric)
    if pooled:
        return list(pooled)
    key = _RESULT_KEY.get(metric, metric)
    vals = repeat_samples(case_or_entry, key)
    if metric == "tokens_per_joule" and len(vals) == 1:
        v, std = metric_value(case_or_entry.get("metrics"), metric)
        return [{"mean": v, "std": std, "n": 1}] if std is not None else [v]
    return vals


def noise_floor(case: dict) -> float:
    """The least run-to-run spread of the device a case measured: a CPU's (no GPU, CPU hardware) or a GPU's."""
    on_cpu = not case.get("gpu") and "cpu" in str(case.get("hardware") or "").lower()
    return S.CPU_NOISE_FLOOR if on_cpu else S.DEFAULT_NOISE_FLOOR


def evaluate(
    case: dict, entry: dict | None, thresholds: dict | Any | None = None, only=None
) -> tuple[dict[str, Verdict], dict[str, dict]]:
    """(verdict per metric, comparison per family) of a results-document case against its baseline entry.
    `only`: the metrics the baseline can be compared on (e.g. prime-rl imports leave step time out)."""
    th = thresholds_for(thresholds)
    floor = noise_floor(case)
    out: dict[str, Verdict] = {}
    families: dict[str, dict] = {}
    for family, metrics in FAMILIES.items():
        usable = [m for m in metrics if only is None or m in only]
        per_metric = {
            m: judge(
                m,
                _side_samples(case, m) or None,
                _side_samples(entry or {}, m) or None,
                threshold=th[m],
                noise_floor=floor,
            )
            for m in usable
        }
        per_metric = {m: v for m, v in per_metric.items() if v.current is not None or v.baseline is not None}
        if not per_metric:
            continue
        primary = next((m for m in usable if m in per_metric and per_metric[m].change_pct is not None), None)
        lead = per_metric[primary] if primary else None
        for m, v in per_metric.items():
            if lead is not None and v.change_pct is not None:
                v = Verdict(
                    **{**v.to_dict(), "status": lead.status, "p_value": lead.p_value, "noise_pct": lead.noise_pct}
                )
            out[m] = v
        if lead is not None:
            families[family] = {
                "metric": primary,
                "status": lead.status,
                "change_pct": lead.change_pct,
                "p_value": lead.p_value,
                "noise_pct": lead.noise_pct,
            }
    return out, families


def _confirm_runs(case: dict) -> int:
    return sum(1 for r in case.get("repeats") or [] if r.get("confirm"))


def case_state(case: dict, confirm: int) -> str | None:
    """suspected | confirmed | cleared | None for a case whose verdicts are attached."""
    regress = any(v.get("status") == "regression" for v in (case.get("verdicts") or {}).values())
    reruns = _confirm_runs(case)
    if regress:
        return "confirmed" if confirm == 0 or reruns > 0 else "suspected"
    return "cleared" if reruns > 0 else None


def apply(
    results: dict, baseline: Any | None, thresholds: dict | Any | None = None, confirm: int | None = None
) -> dict:
    """Attach verdicts to a results document (in place, and returned): each case gets `verdicts` (per metric),
    `verdict` {state, families, tainted} and `baseline` (the entry it was compared with); the document gets
    `baseline` {source, description, matched} and `summary` (regressions = Confirmed cases).
    `baseline`: a baseline.Baseline or None. `confirm`: the re-runs the executor gives a suspected regression
    (the local executor: the spec's `confirm`). None or 0 where none can follow (a report rendered from
    finished results, `trainbench compare`, the operator until it re-runs cases): a significant regression is
    then Confirmed by the test alone."""
    th = thresholds if thresholds is not None else (results.get("thresholds") or None)
    confirm = confirm or 0
    matched = 0
    for case in results.get("cases", []):
        case["verdicts"] = None
        case["verdict"] = None
        case["baseline"] = None
        if baseline is None or case.get("phase") != "Succeeded":
            continue
        entry = baseline.find(case)
        if entry is None:
            continue
        matched += 1
        verdicts, families = evaluate(case, entry, th, only=entry.get("comparable"))
        healths = [r.get("health") for r in case.get("repeats") or []] or [(case.get("trainer") or {}).get("health")]
        tainted = T.reasons(healths, entry.get("health"))
        if tainted:
            verdicts = {
                m: Verdict(**{**v.to_dict(), "status": "tainted"}) if v.status in ("regression", "improvement") else v
                for m, v in verdicts.items()
            }
            families = {
                f: {**d, "status": "tainted"} if d["status"] in ("regression", "improvement") else d
                for f, d in families.items()
            }
        case["verdicts"] = {m: v.to_dict() for m, v in verdicts.items()}
        state = case_state(case, confirm)
        if state:
            for v in case["verdicts"].values():
                if v["status"] == "regression" or state == "cleared":
                    v["state"] = state
        case["verdict"] = {"state": state, "families": families, "tainted": tainted}
        keep = ("source", "run", "runs", "when", "hardware", "metrics", "image", "note")
        case["baseline"] = {k: entry.get(k) for k in keep if k in entry}
    results["baseline"] = (
        None
        if baseline is None
        else {"source": baseline.source, "description": baseline.description, "matched": matched}
    )
    results["summary"] = counts(results.get("cases", []))
    return results


def suspected(results: dict) -> list[dict]:
    """Cases whose regression awaits its confirming re-runs."""
    return [c for c in results.get("cases", []) if (c.get("verdict") or {}).get("state") == "suspected"]


def regressions(results: dict) -> list[tuple[dict, dict]]:
    """(case, verdict) for every metric verdict of a Confirmed regression in a results document."""
    out = []
    for case in results.get("cases", []):
        if (case.get("verdict") or {}).get("state") != "confirmed":
            continue
        for v in (case.get("verdicts") or {}).values():
            if v.get("status") == "regression":
                out.append((case, v))
    return out
