"""Statistics of repeated measurements: the value of a case, its two spreads, and the test behind a verdict.

A case runs `repeats` times as fresh processes (or pods). Each repeat gives a per-step summary of every
metric: {mean, std, n}. Two sources of variance follow:

- step-to-step: the spread of the steps inside one process (`std` of a repeat);
- run-to-run: the spread of the repeats' means, which sees what one process cannot (compiler autotuning
  choices, host load, clocks, memory placement).

The value of a case is the median of its repeats' means, or the olympic mean (drop the lowest and the
highest) from 5 repeats up, as MLPerf scores. The test between a current and a baseline set of repeats is
Welch's t-test (scipy) on the repeats' means when both sides have two repeats or more, each side's variance being
the larger of its run-to-run variance and its step-to-step variance of a mean. When a side has one repeat, its
run-to-run spread is unseen: it borrows the other side's relative run-to-run spread, or, when neither side has
two repeats, the relative `noise_floor` (2.5%: fresh processes of Qwen3-0.6B SFT 8k with torch.compile on an
H200 spread by 2.6% CV, docs/performance.md; 30% for CPU measurements); with that variance taken as known, the
test is a z-test. A change is significant when the test says so (p < alpha) AND its log ratio is larger than
twice the relative run-to-run spread, never taken below the floor (a change that small is within what two fresh
processes of identical code show). The test runs on the
logarithm of the means: throughput varies by factors, and a -90% drop must be able to exceed a 60% spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats

DEFAULT_ALPHA = 0.05
DEFAULT_NOISE_FLOOR = 0.025  # relative run-to-run spread assumed when no side has two repeats (a GPU)
# the same for a CPU measurement (the tiny models of the CPU suites on a shared 2-core CI machine): fresh processes
# of one rl-lora case ran at 20.8k, 13.1k, 8.4k and 13.2k tok/s (CV ~35%), and a clean-clone CI run confirmed a
# regression of identical code from two re-runs that happened to agree (docs/verdicts.md)
CPU_NOISE_FLOOR = 0.30


def central(values: Sequence[float]) -> float | None:
    """The value of a set of repeats: median below 5 values, olympic mean (min and max dropped) from 5 up."""
    vals = sorted(float(v) for v in values if _finite(v))
    if not vals:
        return None
    if len(vals) >= 5:
        return statistics.fmean(vals[1:-1])
    return statistics.median(vals)


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Samples:
    """One side of a comparison: the per-repeat means of a metric with their step-to-step spreads."""

    means: tuple[float, ...]
    step_stds: tuple[float, ...] = ()
    step_counts: tuple[int, ...] = ()

    @classmethod
    def of(cls, summaries: Iterable[dict | float | None]) -> Samples:
        """From per-repeat summaries {mean, std, n} (or plain numbers); unusable entries are skipped."""
        means, stds, ns = [], [], []
        for s in summaries:
            if isinstance(s, dict):
                m, sd, n = s.get("mean"), s.get("std"), s.get("n")
            else:
                m, sd, n = s, None, None
            if not _finite(m):
                continue
            means.append(float(m))
            if _finite(sd) and isinstance(n, int) and n > 0:
                stds.append(float(sd))
                ns.append(int(n))
        return cls(tuple(means), tuple(stds), tuple(ns))

    @property
    def k(self) -> int:
        return len(self.means)

    @property
    def value(self) -> float | None:
        return central(self.means)

    @property
    def run_std(self) -> float | None:
        """Run-to-run standard deviation of the repeats' means (None below two repeats)."""
        return statistics.stdev(self.means) if self.k >= 2 else None

    @property
    def step_std(self) -> float | None:
        """Pooled step-to-step standard deviation inside the repeats (None when unmeasured)."""
        if not self.step_stds:
            return None
        return math.sqrt(statistics.fmean(s * s for s in self.step_stds))

    @property
    def step_var_of_mean(self) -> float:
        """Variance of one repeat's mean that the step-to-step spread alone explains."""
        if not self.step_stds:
            return 0.0
        return statistics.fmean(s * s / n for s, n in zip(self.step_stds, self.step_counts, strict=True))

    def summary(self) -> dict:
        """What results.json records: the value, both spreads, the repeats' means."""
        value, run_std = self.value, self.run_std
        return {
            "value": value,
            "repeats": self.k,
            "means": list(self.means),
            "run_std": run_std,
            "run_cv": (run_std / abs(value)) if run_std is not None and value else None,
            "step_std": self.step_std,
        }


@dataclass(frozen=True)
class Comparison:
    """Current against baseline for one metric: relative change, p-value and whether it is significant."""

    current: float | None
    baseline: float | None
    change_pct: float | None  # signed, (current - baseline) / |baseline|
    p_value: float | None
    significant: bool
    noise_pct: float | None  # the change (percent) below which the two sides cannot be told apart
    method: str

    def to_dict(self) -> dict:
        return {
            "current": self.current,
            "baseline": self.baseline,
            "change_pct": self.change_pct,
            "p_value": self.p_value,
            "significant": self.significant,
            "noise_pct": self.noise_pct,
            "method": self.method,
        }


def _log_side(s: Samples) -> tuple[list[float], float | None, float]:
    """(log means, log run-to-run sd or None, step-to-step variance of one repeat's log mean)."""
    logs = [math.log(m) for m in s.means]
    sd = statistics.stdev(logs) if len(logs) >= 2 else None
    step = 0.0
    if s.step_stds:
        step = statistics.fmean(
            (sd_ / m) ** 2 / n for sd_, n, m in zip(s.step_stds, s.step_counts, s.means, strict=False)
        )
    return logs, sd, step


def _step_cv(s: Samples) -> float:
    """The largest relative step-to-step spread of a side's repeats (0 when unmeasured)."""
    cvs = [sd / m for sd, m in zip(s.step_stds, s.means, strict=False) if m > 0]
    return max(cvs, default=0.0)


def compare(
    current: Samples,
    baseline: Samples,
    *,
    alpha: float = DEFAULT_ALPHA,
    noise_floor: float = DEFAULT_NOISE_FLOOR,
) -> Comparison:
    """The test between two sets of repeats (module docstring). Throughput-like metrics vary by factors, so the
    test runs on the logarithm of the repeats' means (a relative spread is then a standard deviation)."""
    cur, base = current.value, baseline.value
    if cur is None or base is None or base == 0:
        return Comparison(cur, base, None, None, False, None, "none")
    change = (cur - base) / abs(base) * 100.0
    if min(current.means + baseline.means) <= 0:  # not a positive quantity: no relative test, no verdict
        return Comparison(cur, base, change, None, False, None, "none")
    lc, sd_c, step_c = _log_side(current)
    lb, sd_b, step_b = _log_side(baseline)
    borrowed = max([x for x in (sd_c, sd_b) if x is not None], default=noise_floor)
    var_c = max(sd_c**2 if sd_c is not None else borrowed**2, step_c)
    var_b = max(sd_b**2 if sd_b is not None else borrowed**2, step_b)
    welch = current.k >= 2 and baseline.k >= 2
    diff = statistics.fmean(lc) - statistics.fmean(lb)
    if var_c == 0 and var_b == 0:
        p = 0.0 if diff != 0 else 1.0
    elif welch:
        res = _scipy_stats.ttest_ind_from_stats(
            statistics.fmean(lc),
            math.sqrt(var_c),
            current.k,
            statistics.fmean(lb),
            math.sqrt(var_b),
            baseline.k,
            equal_var=False,
        )
        p = float(res.pvalue) if math.isfinite(res.pvalue) else 1.0
    else:  # a side's run-to-run variance is a prior (borrowed or the floor): treat it as known
        z = diff / math.sqrt(var_c / current.k + var_b / baseline.k)
        p = float(2 * _scipy_stats.norm.sf(abs(z)))
    # the guard band: twice the larger of the run-to-run spread and a single step's relative spread (a process's
    # mean over a few noisy steps is no tighter across processes than one step: the CPU's tiny models swing by
    # tens of percent, a GPU's steps by about one, where the 2.5% floor rules)
    # the floor is also the least run-to-run spread assumed: two or three processes that happen to agree do not
    # make a device quieter than fresh processes of it are known to be
    guard = 2.0 * max(borrowed, _step_cv(current), _step_cv(baseline), noise_floor)
    significant = p < alpha and abs(math.log(cur / base)) > guard
    noise_pct = 100.0 * (math.exp(guard) - 1.0)
    return Comparison(cur, base, change, p, significant, noise_pct, "welch" if welch else "z+prior")
