"""Environment health around a measurement: what the GPU and the host looked like before and after a case.

`snapshot()` reads, where the platform lets it:
- host (psutil, /proc): CPUs, the CPUs this process may run on (affinity), load average, the host's busy CPU
  seconds and the CPU seconds of this run's own processes (the trainer's process tree, or under torchrun the
  agent's), so that `summarize()` can tell how much CPU *other* processes used while the case ran;
- NVIDIA GPU (NVML): SM and memory clocks (current and max), enforced power limit, clock-event (throttle)
  reasons, temperature, volatile uncorrected ECC errors, other processes on the GPU;
- AMD GPU (amdsmi): clocks, power cap, temperature, other processes, where the library answers.

XID errors are only delivered as NVML events (or the kernel log), which a pod cannot read: not recorded.
Nothing here raises: an unreadable field is None.
"""

from __future__ import annotations

import os
import time

from trainbench.trainer.power import nvml_handle

# NVML clock-event reasons that mean the GPU ran slower than it should for reasons outside the benchmark
# (bit values from nvml.h; SW power cap, idle and application clocks are normal under a training load).
_BAD_THROTTLE = {
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
_OTHER_THROTTLE = {0x1: "gpu_idle", 0x2: "applications_clocks", 0x4: "sw_power_cap", 0x10: "sync_boost"}


def _own_tree():
    """This run's processes: under torchrun the agent and all its ranks, else this process and its children."""
    import psutil

    me = psutil.Process()
    root = me.parent() if os.environ.get("TORCHELASTIC_RUN_ID") and me.parent() is not None else me
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return [me]


def host_snapshot() -> dict:
    out: dict = {"time": time.time(), "cpu_count": os.cpu_count()}
    try:
        out["affinity"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        out["affinity"] = None
    try:
        out["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        out["loadavg_1m"] = None
    try:
        import psutil

        t = psutil.cpu_times()
        out["host_busy_s"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        own = 0.0
        for p in _own_tree():
            try:
                ct = p.cpu_times()
                own += ct.user + ct.system + ct.children_user + ct.children_system
            except Exception:
                continue
        out["own_busy_s"] = own
    except Exception:
        out["host_busy_s"] = out["own_busy_s"] = None
    return out


def _nvml_gpu(index: int) -> dict | None:
    try:
        import pynvml as nv

        nv.nvmlInit()
        h = nvml_handle(nv, index)
    except Exception:
        return None

    def read(fn, *args, scale=1.0):
        try:
            v = fn(h, *args)
            return v * scale if scale != 1.0 else v
        except Exception:
            return None

    reasons = read(getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", nv.nvmlDeviceGetCurrentClocksThrottleReasons))
    procs = read(nv.nvmlDeviceGetComputeRunningProcesses) or []
    mine = {p.pid for p in _own_tree()} if procs else set()
    return {
        "sm_clock_mhz": read(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": read(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
        "sm_clock_max_mhz": read(nv.nvmlDeviceGetMaxClockInfo, nv.NVML_CLOCK_SM),
        "mem_clock_max_mhz": read(nv.nvmlDeviceGetMaxClockInfo, nv.NVML_CLOCK_MEM),
        "power_limit_w": read(nv.nvmlDeviceGetEnforcedPowerLimit, scale=1e-3),
        "temperature_c": read(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
        "throttle_bits": reasons,
        "ecc_uncorrected": read(nv.nvmlDeviceGetTotalEccErrors, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, 0),
        "other_processes": sorted(p.pid for p in procs if p.pid not in mine),
    }


def _amdsmi_gpu(index: int) -> dict | None:
    try:
        import amdsmi as a

        a.amdsmi_init()
        h = a.amdsmi_get_processor_handles()[index]
    except Exception:
        return None

    def read(fn, *args):
        try:
            return fn(h, *args)
        except Exception:
            return None

    clk = read(a.amdsmi_get_clock_info, a.AmdSmiClkType.GFX) or {}
    mclk = read(a.amdsmi_get_clock_info, a.AmdSmiClkType.MEM) or {}
    cap = read(a.amdsmi_get_power_cap_info) or {}
    procs = read(a.amdsmi_get_gpu_process_list) or []
    mine = {p.pid for p in _own_tree()}
    return {
        "sm_clock_mhz": clk.get("clk"),
        "mem_clock_mhz": mclk.get("clk"),
        "sm_clock_max_mhz": clk.get("max_clk"),
        "mem_clock_max_mhz": mclk.get("max_clk"),
        "power_limit_w": (cap.get("power_cap") or 0) / 1e6 or None,
        "temperature_c": None,
        "throttle_bits": None,
        "ecc_uncorrected": None,
        "other_processes": sorted(p.get("pid") for p in procs if isinstance(p, dict) and p.get("pid") not in mine),
    }


def snapshot(gpu_index: int | None = None) -> dict:
    """Host and (where `gpu_index` is given and a library reads it) GPU state now."""
    gpu = None
    if gpu_index is not None:
        gpu = _nvml_gpu(gpu_index) or _amdsmi_gpu(gpu_index)
    return {"host": host_snapshot(), "gpu": gpu}


def throttle_reasons(bits: int | None) -> tuple[list[str], list[str]]:
    """(bad, other) clock-event reasons named from an NVML bit mask."""
    if not bits:
        return [], []
    bad = [name for bit, name in _BAD_THROTTLE.items() if bits & bit]
    other = [name for bit, name in _OTHER_THROTTLE.items() if bits & bit]
    return bad, other


def summarize(before: dict, after: dict) -> dict:
    """What results.json records for a case: the environment over the measured window.

    `other_cpu_load`: CPUs' worth of time that processes other than this run's used while it ran (host busy
    seconds minus this run's own, over the wall time), e.g. 1.0 = one CPU kept busy by someone else."""
    hb, ha = before.get("host") or {}, after.get("host") or {}
    wall = (ha.get("time") or 0) - (hb.get("time") or 0)
    other = None
    if wall > 0 and None not in (hb.get("host_busy_s"), ha.get("host_busy_s"), hb.get("own_busy_s")):
        used = (ha["host_busy_s"] - hb["host_busy_s"]) - (ha["own_busy_s"] - hb["own_busy_s"])
        other = max(0.0, used / wall)
    out: dict = {
        "cpu_count": ha.get("cpu_count"),
        "affinity": ha.get("affinity"),
        "loadavg_1m": ha.get("loadavg_1m"),
        "other_cpu_load": other,
        "window_s": wall if wall > 0 else None,
    }
    gb, ga = before.get("gpu"), after.get("gpu")
    if ga:
        bad, normal = throttle_reasons(ga.get("throttle_bits"))
        ecc_b, ecc_a = (gb or {}).get("ecc_uncorrected"), ga.get("ecc_uncorrected")
        out["gpu"] = {
            "sm_clock_max_mhz": ga.get("sm_clock_max_mhz"),
            "mem_clock_max_mhz": ga.get("mem_clock_max_mhz"),
            "sm_clock_mhz": ga.get("sm_clock_mhz"),
            "mem_clock_mhz": ga.get("mem_clock_mhz"),
            "power_limit_w": ga.get("power_limit_w"),
            "temperature_c": ga.get("temperature_c"),
            "throttle": bad,
            "throttle_other": normal,
            "ecc_uncorrected_new": (ecc_a - ecc_b) if None not in (ecc_a, ecc_b) else None,
            "other_processes": sorted(
                set((gb or {}).get("other_processes") or []) | set(ga.get("other_processes") or [])
            ),
        }
    return out
