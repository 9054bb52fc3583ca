"""The operator's change-point gauge (controller/metrics.py): the suite's newest run counts, slowdowns and
improvements carry their direction, and an ack (or an accept of the run) takes a change point out."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trainbench.operator.controller.metrics import OM_CHANGE_POINTS, OperatorMetrics, direction


def _doc(points: list[dict]) -> dict:
    case = {"id": "c1", "model": "qwen3-0.6b", "type": "sft-full", "pool": "h100", "phase": "Succeeded"}
    return {"cases": [case], "change_points": points}


def _gauge(store: OperatorMetrics) -> list[tuple[dict, float]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(store)
    text = generate_latest(registry).decode()
    return [
        (s.labels, s.value)
        for f in text_string_to_metric_families(text)
        if f.name == OM_CHANGE_POINTS
        for s in f.samples
    ]


def test_direction_follows_the_metric():
    assert direction("tps", -10) == direction("step_time", 10) == direction("peak_memory_gib", 3) == "worse"
    assert direction("mfu", 5) == direction("step_time", -5) == "better"


def test_newest_run_counts_and_acks_remove_change_points():
    store = OperatorMetrics()
    old = [{"case": "c1", "metric": "tps", "run": "n-3", "index": 3, "change_pct": -20.0}]
    store.update("ns", "n-8", "nightly", {"phase": "Succeeded", "completedAt": "2026-11-08T03:00:00Z"}, _doc(old))
    points = [
        {"case": "c1", "metric": "tps", "run": "n-3", "index": 3, "change_pct": -20.0},
        {"case": "c1", "metric": "tps", "run": "n-7", "index": 7, "change_pct": -10.0},
        {"case": "c1", "metric": "step_time", "run": "n-7", "index": 7, "change_pct": -9.0},
        {"case": "c1", "metric": "mfu", "run": "n-5", "index": 5, "change_pct": -8.0, "acknowledged": True},
    ]
    store.update("ns", "n-9", "nightly", {"phase": "Succeeded", "completedAt": "2026-11-09T03:00:00Z"}, _doc(points))
    assert store.newest("ns", "nightly") == "n-9"
    base = {"suite": "nightly", "case": "c1", "model": "qwen3-0.6b", "type": "sft-full", "pool": "h100"}
    assert _gauge(store) == [
        ({**base, "metric": "step_time", "direction": "better", "run": "n-7"}, 1.0),
        ({**base, "metric": "tps", "direction": "worse", "run": "n-7"}, 2.0),  # two slowdowns, the newest named
    ]
    store.set_acks("ns", "nightly", [{"run": "n-7", "case": "*", "metric": "tps"}])
    assert _gauge(store) == [
        ({**base, "metric": "step_time", "direction": "better", "run": "n-7"}, 1.0),
        ({**base, "metric": "tps", "direction": "worse", "run": "n-3"}, 1.0),
    ]
    # an accepted run acknowledges its change points too (an accept entry has no metric: all of them)
    store.set_acks("ns", "nightly", [{"run": "n-7", "case": "c1", "accept": True}, {"run": "n-3", "case": "c1"}])
    assert _gauge(store) == [] and store.open_change_points("ns", "nightly") == {}
    store.forget("ns", "n-9")  # the newest run deleted: the one before it counts again
    assert [labels["run"] for labels, _ in _gauge(store)] == []  # n-3 is acknowledged for this suite
    store.set_acks("ns", "nightly", [])
    assert [labels["run"] for labels, _ in _gauge(store)] == ["n-3"]
