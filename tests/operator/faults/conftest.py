"""Options of the fault campaign: `--fault-runs N` (or TRAINBENCH_FAULT_RUNS), `--fault-seed S`."""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("trainbench faults")
    group.addoption("--fault-runs", type=int, default=None, help="BenchmarkRuns in the fault campaign (CI: 4)")
    group.addoption("--fault-seed", type=int, default=None, help="the campaign's random seed (default 19)")
