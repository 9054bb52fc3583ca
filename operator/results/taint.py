"""Tainted measurements: a case whose environment was unhealthy, or differs from its baseline's, is reported with
the reason, is never a baseline and never a regression.

Input: the `health` block the trainer records (trainer/health.py `summarize`), per repeat. Rules:
- other processes kept more than `MAX_OTHER_CPU` CPUs busy while the case ran (host load);
- other processes ran on the GPU;
- the GPU throttled for a reason outside the benchmark (HW slowdown, thermal, power brake);
- new uncorrected ECC errors;
- against the baseline: a different CPU count or affinity, a different GPU max SM/memory clock or power limit.
"""

from __future__ import annotations

import os

# CPUs' worth of other processes' time during the case (the executor's own scraping is ~0.05); a shared
# development machine may raise it with TRAINBENCH_MAX_OTHER_CPU (read when a verdict is made)
MAX_OTHER_CPU = 0.5


def max_other_cpu() -> float:
    try:
        return float(os.environ.get("TRAINBENCH_MAX_OTHER_CPU") or MAX_OTHER_CPU)
    except ValueError:
        return MAX_OTHER_CPU


_GPU_FIELDS = (("sm_clock_max_mhz", "max SM clock", "MHz"), ("mem_clock_max_mhz", "max memory clock", "MHz"))
_GPU_FIELDS += (("power_limit_w", "power limit", "W"),)


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def unhealthy(health: dict | None) -> list[str]:
    """Reasons a measurement's own environment was unhealthy (empty: healthy or unknown)."""
    if not isinstance(health, dict):
        return []
    out = []
    other = _num(health.get("other_cpu_load"))
    if other is not None and other > max_other_cpu():
        cpus = health.get("affinity") or health.get("cpu_count")
        out.append(f"host load: other processes used {other:.1f} of {cpus} CPUs")
    gpu = health.get("gpu") if isinstance(health.get("gpu"), dict) else {}
    if gpu.get("other_processes"):
        out.append(f"other processes on the GPU: pids {', '.join(str(p) for p in gpu['other_processes'][:5])}")
    if gpu.get("throttle"):
        out.append(f"GPU throttled: {', '.join(gpu['throttle'])}")
    ecc = _num(gpu.get("ecc_uncorrected_new"))
    if ecc:
        out.append(f"{int(ecc)} new uncorrected ECC errors")
    return out


def differs(health: dict | None, baseline: dict | None) -> list[str]:
    """Reasons a measurement's environment is not comparable with its baseline's."""
    if not isinstance(health, dict) or not isinstance(baseline, dict):
        return []
    out = []
    for key, label in (("cpu_count", "CPU count"), ("affinity", "CPU affinity")):
        a, b = health.get(key), baseline.get(key)
        if a is not None and b is not None and a != b:
            out.append(f"{label} {a} vs baseline {b}")
    ga = health.get("gpu") if isinstance(health.get("gpu"), dict) else {}
    gb = baseline.get("gpu") if isinstance(baseline.get("gpu"), dict) else {}
    for key, label, unit in _GPU_FIELDS:
        a, b = _num(ga.get(key)), _num(gb.get(key))
        if a is not None and b is not None and abs(a - b) > 0.01 * max(abs(b), 1.0):
            out.append(f"{label} {a:g} {unit} vs baseline {b:g} {unit}")
    return out


def reasons(healths: list[dict | None], baseline_health: dict | None = None) -> list[str]:
    """All taint reasons of a case from its repeats' health blocks (deduplicated, in order)."""
    seen: list[str] = []
    for h in healths:
        for r in unhealthy(h) + differs(h, baseline_health):
            if r not in seen:
                seen.append(r)
    return seen
