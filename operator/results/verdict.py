"""Verdicts: compare a case's metrics with its baseline, per metric, with a direction and a threshold.

Rules (in this order, per metric):
1. no current value -> "missing"; no baseline value -> "new" (nothing to compare);
2. |change| < SHOW_PCT (1%) -> "same" (not shown);
3. |change| within the measured step-to-step spread of both runs (sqrt(std_now² + std_base²), the
   combined standard deviation of the two per-step series) -> "noise" (shown, never a regression);
4. worse than the metric's threshold (default 5%) -> "regression";
5. better than the threshold -> "improvement"; otherwise -> "changed" (a change >= 1%, shown).

Directions: MFU, TPS, tokens/J: higher is better; step time, peak memory: lower is better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from trainbench.operator.results.document import counts
from trainbench.operator.results.keys import METRICS

HIGHER_IS_BETTER = {"mfu": True, "tps": True, "step_time": False, "peak_memory": False, "tokens_per_joule": True}
DEFAULT_THRESHOLD = 5.0  # percent
SHOW_PCT = 1.0  # percent: smaller changes are not shown

STATUSES = ("regression", "improvement", "changed", "noise", "same", "new", "missing")


@dataclass(frozen=True)
class Verdict:
    """How one metric of a case compares with its baseline (the report's verdicts; not a case's state)."""

    metric: str
    status: str  # one of STATUSES
    current: float | None
    baseline: float | None
    change_pct: float | None  # (current - baseline) / baseline, percent, signed
    threshold: float
    higher_is_better: bool
    spread: float | None = None  # combined step-to-step std of both runs (metric units); None if unknown

    @property
    def shown(self) -> bool:
        return self.status in ("regression", "improvement", "changed", "noise")

    def to_dict(self) -> dict:
        return asdict(self)


def metric_value(metrics: dict | None, metric: str) -> tuple[float | None, float | None]:
    """(mean, std) of a metric from a results-document metrics block; std None when unmeasured."""
    if not metrics:
        return None, None
    if metric == "peak_memory":
        return metrics.get("peak_memory_gib"), None
    if metric == "tokens_per_joule":
        tpj = metrics.get("tokens_per_joule")
        if tpj is None:
            return None, None
        tps, power = metrics.get("tps") or {}, metrics.get("power_w") or {}
        rel = [
            s.get("std") / s.get("mean")
            for s in (tps, power)
            if s.get("std") is not None and s.get("mean") not in (None, 0)
        ]
        return tpj, (tpj * math.sqrt(sum(r * r for r in rel)) if len(rel) == 2 else None)
    summary = metrics.get(metric)
    if not isinstance(summary, dict):
        return None, None
    return summary.get("mean"), summary.get("std")


def thresholds_for(thresholds: dict | Any | None) -> dict[str, float]:
    """Per-metric thresholds (percent) from a dict {metric: pct, default: pct} or an api.Thresholds."""
    if thresholds is None:
        return dict.fromkeys(METRICS, DEFAULT_THRESHOLD)
    if hasattr(thresholds, "for_metric"):
        return {m: thresholds.for_metric(m) for m in METRICS}
    default = thresholds.get("default") or DEFAULT_THRESHOLD
    return {m: float(thresholds.get(m) or default) for m in METRICS}


def judge(
    metric: str,
    current: float | None,
    baseline: float | None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    current_std: float | None = None,
    baseline_std: float | None = None,
    show_pct: float = SHOW_PCT,
) -> Verdict:
    """The verdict on one metric (the rules in the module docstring)."""
    higher = HIGHER_IS_BETTER[metric]
    stds = [s for s in (current_std, baseline_std) if s is not None]
    spread = math.sqrt(sum(s * s for s in stds)) if len(stds) == 2 else None
    if current is None:
        return Verdict(metric, "missing", None, baseline, None, threshold, higher, spread)
    if baseline is None or baseline == 0:
        return Verdict(metric, "new", current, baseline, None, threshold, higher, spread)
    change = (current - baseline) / abs(baseline) * 100.0
    worse = -change if higher else change
    if abs(change) < show_pct:
        status = "same"
    elif spread is not None and spread > 0 and abs(current - baseline) <= spread:
        status = "noise"
    elif worse > threshold:
        status = "regression"
    elif -worse > threshold:
        status = "improvement"
    else:
        status = "changed"
    return Verdict(metric, status, current, baseline, change, threshold, higher, spread)


def evaluate(
    metrics: dict | None, baseline_metrics: dict | None, thresholds: dict | Any | None = None, only=None
) -> dict[str, Verdict]:
    """Verdicts for every metric of a case (results-document metrics blocks). `only`: the metrics the
    baseline can be compared on (e.g. prime-rl imports leave step time out)."""
    th = thresholds_for(thresholds)
    out = {}
    for metric in METRICS:
        if only is not None and metric not in only:
            continue
        cur, cur_std = metric_value(metrics, metric)
        base, base_std = metric_value(baseline_metrics, metric)
        if cur is None and base is None:
            continue
        out[metric] = judge(metric, cur, base, threshold=th[metric], current_std=cur_std, baseline_std=base_std)
    return out


def apply(results: dict, baseline: Any | None, thresholds: dict | Any | None = None) -> dict:
    """Attach verdicts to a results document (in place, and returned): each case gets `verdicts` and
    `baseline` (the entry it was compared with), the document gets `baseline` {source, description,
    matched} and `summary.regressions`. `baseline`: a baseline.Baseline or None."""
    th = thresholds if thresholds is not None else (results.get("thresholds") or None)
    matched = 0
    for case in results.get("cases", []):
        case["verdicts"] = None
        case["baseline"] = None
        if baseline is None or case.get("phase") != "Succeeded":
            continue
        entry = baseline.find(case)
        if entry is None:
            continue
        matched += 1
        verdicts = evaluate(case.get("metrics"), entry.get("metrics"), th, only=entry.get("comparable"))
        case["verdicts"] = {m: v.to_dict() for m, v in verdicts.items()}
        case["baseline"] = {k: entry.get(k) for k in ("source", "run", "when", "hardware", "metrics")}
    results["baseline"] = (
        None
        if baseline is None
        else {"source": baseline.source, "description": baseline.description, "matched": matched}
    )
    results["summary"] = counts(results.get("cases", []))
    return results


def regressions(results: dict) -> list[tuple[dict, dict]]:
    """(case, verdict) for every regression in a results document with verdicts attached."""
    out = []
    for case in results.get("cases", []):
        for v in (case.get("verdicts") or {}).values():
            if v.get("status") == "regression":
                out.append((case, v))
    return out
