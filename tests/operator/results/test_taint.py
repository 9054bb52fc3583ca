"""Taint rules (operator/results/taint.py): pure, from health blocks as the trainer records them."""

from trainbench.operator.results.taint import differs, reasons, unhealthy


def _h(**kw):
    gpu = kw.pop("gpu", None)
    base = {"cpu_count": 16, "affinity": 16, "other_cpu_load": 0.05}
    base.update(kw)
    if gpu is not None:
        base["gpu"] = {"sm_clock_max_mhz": 1980, "mem_clock_max_mhz": 3201, "power_limit_w": 700.0} | gpu
    return base


def test_healthy_is_clean():
    assert reasons([_h(gpu={}), _h(gpu={})], _h(gpu={})) == []
    assert unhealthy(None) == [] and differs(None, _h()) == []


def test_each_unhealthy_reason_is_named():
    assert unhealthy(_h(other_cpu_load=3.2)) == ["host load: other processes used 3.2 of 16 CPUs"]
    assert unhealthy(_h(gpu={"other_processes": [4242]})) == ["other processes on the GPU: pids 4242"]
    assert unhealthy(_h(gpu={"throttle": ["hw_thermal_slowdown"]})) == ["GPU throttled: hw_thermal_slowdown"]
    assert unhealthy(_h(gpu={"ecc_uncorrected_new": 2})) == ["2 new uncorrected ECC errors"]


def test_differences_from_the_baseline_are_named():
    base = _h(gpu={})
    assert differs(_h(gpu={"power_limit_w": 500.0}), base) == ["power limit 500 W vs baseline 700 W"]
    assert differs(_h(affinity=8, gpu={}), base) == ["CPU affinity 8 vs baseline 16"]
    # repeats share a reason once
    assert reasons([_h(other_cpu_load=2.0), _h(other_cpu_load=2.0)]) == [
        "host load: other processes used 2.0 of 16 CPUs"
    ]
