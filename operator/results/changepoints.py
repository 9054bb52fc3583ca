"""Change-point detection over a suite's history (Apache Otava's E-divisive, the method behind orion/Hunter).

For every case and metric, the history's values (oldest first; tainted and failed runs left out) form one series;
Otava's `compute_change_points` finds the indices after which the series' distribution moved. Each change point
names the first run after the change, with that run's commit and image, the change in percent and its p-value.

Acknowledgements (`acks`): a list of {case, metric, run, note?} (from `acks.json` beside a local history, or the
suite's acks ConfigMap on a cluster). An acknowledged change point is still reported, marked as such, and never
flagged again. A run listed with `accept: true` also lets a slowdown become the new baseline (see baseline.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

try:  # installed without its own dependencies (pyproject.toml says why); only this module needs it
    from otava.analysis import compute_change_points
except ImportError:  # pragma: no cover - a hand-made install without it: reports go on without change points
    compute_change_points = None

log = logging.getLogger(__name__)
MISSING = "apache-otava is not installed (pip install --no-deps apache-otava==0.8.0): no change points"

METRICS = ("tps", "step_time", "mfu", "peak_memory_gib", "tokens_per_joule")
DEFAULT_MAX_PVALUE = 0.001
DEFAULT_MIN_MAGNITUDE = 0.05  # relative: smaller moves are not reported as change points
MIN_POINTS = 6  # Otava needs a few points on each side of a change to say anything


@dataclass(frozen=True)
class ChangePoint:
    case: str
    metric: str
    run: str | None  # the first run after the change
    index: int  # position of that run in the case's series
    change_pct: float
    p_value: float
    mean_before: float
    mean_after: float
    commit: str | None = None
    image: str | None = None
    acknowledged: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _value(metrics: dict | None, metric: str) -> float | None:
    if not metrics:
        return None
    v = metrics.get(metric)
    if isinstance(v, dict):
        v = v.get("mean")
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def series(history: dict, case_id: str, metric: str) -> list[tuple[dict, float]]:
    """(run entry, value) for one case and metric, oldest first; failed and tainted cases left out."""
    out = []
    for run in history.get("runs", []):
        for c in run.get("cases", []):
            if c.get("id") != case_id or c.get("phase") != "Succeeded" or c.get("tainted"):
                continue
            v = _value(c.get("metrics"), metric)
            if v is not None:
                out.append((run, v))
    return out


def acknowledged(acks: list[dict] | None, case: str, metric: str, run: str | None) -> bool:
    """Whether an ack entry (or an accept of that run: it has no metric) covers this change point."""
    for a in acks or []:
        if a.get("run") == run and a.get("case") in (None, "*", case) and a.get("metric") in (None, "*", metric):
            return True
    return False


def detect(
    history: dict,
    *,
    acks: list[dict] | None = None,
    metrics: tuple[str, ...] = METRICS,
    max_pvalue: float = DEFAULT_MAX_PVALUE,
    min_magnitude: float = DEFAULT_MIN_MAGNITUDE,
) -> list[ChangePoint]:
    """Every change point of every case and metric in a history document ([] without apache-otava, logged)."""
    if compute_change_points is None:
        log.warning(MISSING)
        return []
    case_ids: list[str] = []
    for run in history.get("runs", []):
        for c in run.get("cases", []):
            if c.get("id") and c["id"] not in case_ids:
                case_ids.append(c["id"])
    out = []
    for case_id in case_ids:
        for metric in metrics:
            points = series(history, case_id, metric)
            if len(points) < MIN_POINTS:
                continue
            values = [v for _, v in points]
            cps, _ = compute_change_points(values, max_pvalue=max_pvalue, min_magnitude=min_magnitude)
            for cp in cps:
                idx = int(cp.index)
                run = points[idx][0]
                st = cp.stats
                out.append(
                    ChangePoint(
                        case=case_id,
                        metric=metric,
                        run=run.get("run"),
                        index=idx,
                        change_pct=float(st.forward_change_percent()),
                        p_value=float(st.pvalue),
                        mean_before=float(st.mean_before()),
                        mean_after=float(st.mean_after()),
                        commit=run.get("commit"),
                        image=run.get("image_digest") or run.get("image"),
                        acknowledged=acknowledged(acks, case_id, metric, run.get("run")),
                    )
                )
    return out


def unacknowledged(points: list[ChangePoint]) -> list[ChangePoint]:
    return [p for p in points if not p.acknowledged]
