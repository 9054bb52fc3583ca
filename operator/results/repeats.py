"""Repeats of a case: several fresh processes (or pods) of the same case, combined into one case of the results
document.

An executor that runs a case `repeats` times (plus the re-runs that confirm a suspected regression) hands
`build_case` one outcome with `repeats: [outcome, ...]`. The case then gets:
- `phase`: Succeeded when every repeat succeeded, else the first failed repeat's phase, reason and message;
- `metrics`: per summary metric, the central value of the repeats' means (stats.central: median, olympic mean
  from 5 up) as `mean`, the pooled step-to-step `std`, min/max over all steps, `n` steps in all, and the
  run-to-run spread `run_std` and `repeats`; scalars (peak memory, energy, tokens/J) their central value; the
  first step's time is the first repeat's (the cold start);
- `repeats`: one compact entry per repeat (phase, confirm flag, times, metrics, environment health).
A case of one repeat keeps its metrics exactly as the trainer reported them.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from trainbench.operator.results.stats import central

_SCALARS = ("peak_memory_gib", "peak_memory_pct", "energy_j", "tokens_per_joule")
COMPACT_SUMMARIES = ("tps", "mfu", "mfu_done", "step_time", "power_w")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def combine_summaries(summaries: list[dict]) -> dict | None:
    """One summary from several repeats' summaries {mean, std, min, max, n} (see the module docstring)."""
    usable = [s for s in summaries if isinstance(s, dict) and _finite(s.get("mean"))]
    if not usable:
        return None
    if len(usable) == 1:
        return dict(usable[0])
    means = [float(s["mean"]) for s in usable]
    stds = [float(s["std"]) for s in usable if _finite(s.get("std"))]
    mins = [float(s["min"]) for s in usable if _finite(s.get("min"))]
    maxs = [float(s["max"]) for s in usable if _finite(s.get("max"))]
    ns = [int(s["n"]) for s in usable if isinstance(s.get("n"), int)]
    return {
        "mean": central(means),
        "std": math.sqrt(statistics.fmean(x * x for x in stds)) if stds else None,
        "min": min(mins) if mins else None,
        "max": max(maxs) if maxs else None,
        "n": sum(ns) if ns else None,
        "run_std": statistics.stdev(means),
        "repeats": len(means),
    }


def combine_metrics(blocks: list[dict | None]) -> dict | None:
    """The metrics block of a case from its successful repeats' metrics blocks."""
    blocks = [b for b in blocks if b]
    if not blocks:
        return None
    if len(blocks) == 1:
        return blocks[0]
    out: dict[str, Any] = {}
    keys = {k for b in blocks for k in b}
    for key in sorted(keys):
        values = [b.get(key) for b in blocks]
        if key == "first_step_s":
            out[key] = values[0]
        elif key in _SCALARS or all(v is None or _finite(v) for v in values):
            out[key] = central([v for v in values if _finite(v)])
        else:
            out[key] = combine_summaries([v for v in values if isinstance(v, dict)])
    return out


def compact(metrics: dict | None) -> dict | None:
    """What one repeat keeps in the results document (and the history): the summaries and scalars verdicts need."""
    if not metrics:
        return None
    out: dict[str, Any] = {}
    for name in COMPACT_SUMMARIES:
        s = metrics.get(name)
        if isinstance(s, dict) and _finite(s.get("mean")):
            out[name] = {k: s.get(k) for k in ("mean", "std", "n")}
    for name in _SCALARS:
        if _finite(metrics.get(name)):
            out[name] = metrics[name]
    return out or None


def samples(case: dict, metric: str) -> list[dict | float]:
    """Per-repeat summaries (or scalars) of one metric of a results-document case, successful repeats only;
    a case without repeats gives its one metrics value."""
    reps = [r for r in case.get("repeats") or [] if not r.get("baseline_image")]  # those measure the baseline
    if reps:
        ok = [r for r in reps if r.get("phase") == "Succeeded"]
        # a case re-run to confirm a suspected regression is judged on its re-runs alone: the process that raised
        # the suspicion was picked for looking bad, so counting it again would confirm its own selection
        confirming = [r for r in ok if r.get("confirm")]
        vals = [(r.get("metrics") or {}).get(metric) for r in (confirming or ok)]
        return [v for v in vals if v is not None]
    v = (case.get("metrics") or {}).get(metric)
    if isinstance(v, dict) and "means" in v:
        return [{"mean": m} for m in v["means"]]
    return [] if v is None else [v]


def merge(outcomes: list[dict], metrics_of) -> tuple[dict, dict | None, list[dict]]:
    """(the outcome that speaks for the case, its combined metrics, the compact repeat entries) from the outcomes
    of a case's repeats, in the order they ran. `metrics_of(outcome)` is the metrics block of one outcome."""
    entries, blocks = [], []
    for i, o in enumerate(outcomes):
        m = metrics_of(o) if o.get("phase") == "Succeeded" else None
        result = o.get("result") if isinstance(o.get("result"), dict) else {}
        entry = {
            "repeat": i + 1,
            "confirm": bool(o.get("confirm")),
            "phase": o.get("phase") or "Pending",
            "reason": o.get("reason"),
            "started_at": o.get("started_at"),
            "finished_at": o.get("finished_at"),
            "metrics": compact(m),
            "health": result.get("health"),
        }
        if o.get("baseline_image"):  # the baseline's image run beside the re-runs: kept, never the case's value
            entries.append({**entry, "baseline_image": o["baseline_image"]})
            continue
        entries.append(entry)
        if m:
            blocks.append(m)
    outcomes = [o for o in outcomes if not o.get("baseline_image")]
    failed = next((o for o in outcomes if o.get("phase") != "Succeeded"), None)
    primary = dict(failed or next(o for o in reversed(outcomes) if o.get("phase") == "Succeeded"))
    starts = [o.get("started_at") for o in outcomes if o.get("started_at")]
    ends = [o.get("finished_at") for o in outcomes if o.get("finished_at")]
    if starts:
        primary["started_at"] = min(starts, key=str)
    if ends:
        primary["finished_at"] = max(ends, key=str)
    return primary, (None if failed else combine_metrics(blocks)), entries


def group_outcomes(units: list, outcomes: dict[str, dict]) -> dict[str, dict]:
    """build_results' outcome per case from the outcomes of its units (plan.with_repeats: the case, its repeats,
    its confirming re-runs, in launch order): a case run once keeps its one outcome, else all of them."""
    by_case: dict[str, list[dict]] = {}
    for u in units:
        o = outcomes.get(u.id)
        if o is not None:
            extra = {"baseline_image": u.image} if getattr(u, "baseline", False) else {}
            by_case.setdefault(u.base_id, []).append({**o, "confirm": u.confirm, **extra})
    return {cid: runs[0] if len(runs) == 1 else {"repeats": runs} for cid, runs in by_case.items()}
