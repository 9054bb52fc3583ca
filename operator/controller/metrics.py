"""The operator's own /metrics (contract.OPERATOR_METRICS_PORT): what Prometheus keeps after the pods are gone.

- `trainbench_runs{phase}` and `trainbench_cases{phase}`: BenchmarkRuns and their cases by phase;
- `trainbench_case_progress_ratio{suite,run,case,pool}`: live progress of running cases;
- for each finished run, each case's results as gauges with contract.RESULT_LABELS
  (`trainbench_result_mfu_percent`, `..._tokens_per_second`, ...), `trainbench_case_failed{...,reason}`,
  `trainbench_result_regression{...,metric}` and `trainbench_run_completion_timestamp_seconds`;
- `trainbench_change_points_unacknowledged{suite,case,model,type,pool,metric,direction,run}`: per suite (its newest run with
  results), case and metric, the change points of the suite's history (results/changepoints.py) that no ack
  covers; `direction` worse or better, `run` the first run after the newest of them. Set at each finish; an ack
  (`set_acks`: the operator re-reads the suite's acks) removes it.

The state is a plain dict updated by the handlers; a custom collector renders it on each scrape, so a
deleted run disappears and nothing is double counted.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

from trainbench.operator.clock import timestamp as _ts
from trainbench.operator.controller.reconcile import RUN_PHASES, TERMINAL_RUN_PHASES
from trainbench.operator.results.changepoints import acknowledged as _acked
from trainbench.trainer import contract as C

OM_CHANGE_POINTS = C.OM_CHANGE_POINTS
HIGHER_IS_BETTER = {"tps", "mfu", "mfu_done", "tokens_per_joule"}  # the others (step time, memory): lower


def direction(metric: str, change_pct: float) -> str:
    """`worse` or `better`: a change point's direction for its metric."""
    up = change_pct > 0
    return "better" if up == (metric in HIGHER_IS_BETTER) else "worse"


def open_change_points(results: dict | None, acks: list[dict] | None) -> dict[tuple[str, str, str], dict]:
    """{(case, metric, direction): {count, run}} of a results document's change points that no ack covers (those
    acknowledged when the run finished, and those `acks` covers now); `run` names the newest."""
    out: dict[tuple[str, str, str], dict] = {}
    for p in (results or {}).get("change_points") or []:
        if p.get("acknowledged") or _acked(acks, p.get("case"), p.get("metric"), p.get("run")):
            continue
        key = (str(p.get("case")), str(p.get("metric")), direction(str(p.get("metric")), p.get("change_pct") or 0))
        slot = out.setdefault(key, {"count": 0, "run": p.get("run"), "index": -1})
        slot["count"] += 1
        if (p.get("index") or 0) >= slot["index"]:
            slot["run"], slot["index"] = p.get("run"), p.get("index") or 0
    return out


class OperatorMetrics:
    """Thread-safe store of what the operator knows about each run; a Prometheus collector."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], dict] = {}  # (namespace, name) -> {suite, status, results}
        self._acks: dict[tuple[str, str], list[dict]] = {}  # (namespace, suite) -> acks read after the finish

    def update(self, namespace: str, name: str, suite: str, status: dict, results: dict | None = None) -> None:
        with self._lock:
            old = self._runs.get((namespace, name)) or {}
            self._runs[(namespace, name)] = {
                "suite": suite,
                "status": dict(status),
                "results": results if results is not None else old.get("results"),
            }

    def has_results(self, namespace: str, name: str) -> bool:
        with self._lock:
            return bool((self._runs.get((namespace, name)) or {}).get("results"))

    def set_acks(self, namespace: str, suite: str, acks: list[dict]) -> None:
        """The suite's acks as they are now: change points they cover leave the gauge."""
        with self._lock:
            self._acks[(namespace, suite)] = list(acks)

    def newest(self, namespace: str, suite: str) -> str | None:
        """The suite's newest finished run with results (by completion time): the one whose change points count."""
        with self._lock:
            runs = [
                ((info["status"].get("completedAt") or ""), name)
                for (ns, name), info in self._runs.items()
                if ns == namespace and info["suite"] == suite and info.get("results")
            ]
        return max(runs)[1] if runs else None

    def open_change_points(self, namespace: str, suite: str) -> dict:
        """The unacknowledged change points the gauge shows for a suite ({} for none)."""
        name = self.newest(namespace, suite)
        with self._lock:
            info = self._runs.get((namespace, name)) or {}
            acks = self._acks.get((namespace, suite))
        return open_change_points(info.get("results"), acks)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._runs.pop((namespace, name), None)

    def describe(self):
        return []

    def collect(self):
        with self._lock:
            runs = {k: dict(v) for k, v in self._runs.items()}
            acks = dict(self._acks)
        result_labels = list(C.RESULT_LABELS)
        g_runs = GaugeMetricFamily(C.OM_RUNS, "BenchmarkRuns by phase", labels=["phase"])
        g_cases = GaugeMetricFamily(C.OM_CASES, "Benchmark cases by phase over all runs", labels=["phase"])
        g_progress = GaugeMetricFamily(
            C.OM_CASE_PROGRESS, "Live progress of running cases (0..1)", labels=["suite", "run", "case", "pool"]
        )
        g_done = GaugeMetricFamily(
            C.OM_RUN_COMPLETED, "When a BenchmarkRun ended (unix seconds)", labels=["suite", "run", "phase"]
        )
        results_families = {
            "mfu": GaugeMetricFamily(C.OM_RESULT_MFU, "Finished case: mean MFU (percent)", labels=result_labels),
            "tps": GaugeMetricFamily(C.OM_RESULT_TPS, "Finished case: mean tokens/s (all GPUs)", labels=result_labels),
            "step_time": GaugeMetricFamily(
                C.OM_RESULT_STEP_TIME, "Finished case: mean step time (s)", labels=result_labels
            ),
            "peak_memory": GaugeMetricFamily(
                C.OM_RESULT_PEAK_MEMORY, "Finished case: peak reserved device memory (bytes)", labels=result_labels
            ),
            "power": GaugeMetricFamily(C.OM_RESULT_POWER, "Finished case: mean power (W)", labels=result_labels),
            "tokens_per_joule": GaugeMetricFamily(
                C.OM_RESULT_TOKENS_PER_JOULE, "Finished case: tokens per joule", labels=result_labels
            ),
        }
        g_failed = GaugeMetricFamily(C.OM_CASE_FAILED, "1 for each failed case", labels=[*result_labels, "reason"])
        g_regr = GaugeMetricFamily(
            C.OM_REGRESSION, "1 for each metric worse than its baseline", labels=[*result_labels, "metric"]
        )
        g_cp = GaugeMetricFamily(
            OM_CHANGE_POINTS,
            "Unacknowledged change points of the suite's history (its newest run), per case and metric",
            labels=["suite", "case", "model", "type", "pool", "metric", "direction", "run"],
        )
        newest: dict[tuple[str, str], tuple[str, dict]] = {}
        for (ns, name), info in runs.items():
            if info.get("results"):
                stamp = info["status"].get("completedAt") or ""
                if (ns, info["suite"]) not in newest or (stamp, name) > newest[(ns, info["suite"])]:
                    newest[(ns, info["suite"])] = (stamp, name)
        for (ns, suite), (_, name) in sorted(newest.items()):
            results = runs[(ns, name)]["results"]
            known = {c.get("id"): c for c in results.get("cases") or []}
            for (case, metric, way), slot in sorted(open_change_points(results, acks.get((ns, suite))).items()):
                info = known.get(case) or {}
                labels = [suite, case, info.get("model", ""), info.get("type", ""), info.get("pool", "")]
                g_cp.add_metric([*labels, metric, way, str(slot["run"])], float(slot["count"]))
        type_families = type_result_families(result_labels)
        run_counts = dict.fromkeys(RUN_PHASES, 0)
        case_counts = dict.fromkeys(C.CASE_PHASES, 0)
        for (_ns, name), info in sorted(runs.items()):
            status, suite = info["status"], info["suite"]
            phase = status.get("phase") or "Pending"
            run_counts[phase] = run_counts.get(phase, 0) + 1
            for case in status.get("cases") or []:
                case_counts[case.get("phase", "Pending")] = case_counts.get(case.get("phase", "Pending"), 0) + 1
                if case.get("phase") == "Running" and case.get("stepsTotal"):
                    ratio = min(1.0, float(case.get("step") or 0) / float(case["stepsTotal"]))
                    g_progress.add_metric([suite, name, case["id"], case.get("pool", "")], ratio)
            if phase in TERMINAL_RUN_PHASES and _ts(status.get("completedAt")):
                g_done.add_metric([suite, name, phase], _ts(status["completedAt"]))
            for case in (info.get("results") or {}).get("cases") or []:
                labels = [
                    suite,
                    name,
                    case["id"],
                    case.get("model", ""),
                    case.get("type", ""),
                    case.get("pool", ""),
                    str(case.get("seq_len", "")),
                    case.get("ac", ""),
                    case.get("attn", ""),
                ]
                if case.get("phase") != "Succeeded":
                    if case.get("phase") in ("Failed", "MetricsUnavailable"):
                        g_failed.add_metric([*labels, case.get("reason") or case["phase"]], 1.0)
                    continue
                m = case.get("metrics") or {}
                for key, fam in (("mfu", "mfu"), ("tps", "tps"), ("step_time", "step_time"), ("power_w", "power")):
                    mean = (m.get(key) or {}).get("mean") if isinstance(m.get(key), dict) else None
                    if mean is not None:
                        results_families[fam].add_metric(labels, float(mean))
                if m.get("peak_memory_gib") is not None:
                    results_families["peak_memory"].add_metric(labels, float(m["peak_memory_gib"]) * 2**30)
                if m.get("tokens_per_joule") is not None:
                    results_families["tokens_per_joule"].add_metric(labels, float(m["tokens_per_joule"]))
                add_type_results(type_families, labels, case)
                state = (case.get("verdict") or {}).get("state")
                for metric, v in (case.get("verdicts") or {}).items():
                    # Confirmed regressions only (results written before verdict states: every regression)
                    if isinstance(v, dict) and v.get("status") == "regression" and state in (None, "confirmed"):
                        g_regr.add_metric([*labels, metric], 1.0)
        for phase, n in run_counts.items():
            g_runs.add_metric([phase], n)
        for phase, n in case_counts.items():
            g_cases.add_metric([phase], n)
        yield from (g_runs, g_cases, g_progress, g_done, *results_families.values(), g_failed, g_regr, g_cp)
        yield from type_families.values()


def type_result_families(result_labels: list[str]) -> dict:
    """Result gauges of the generate and verify types (per batch size, per k)."""
    return {
        "decode_tps": GaugeMetricFamily(
            C.OM_RESULT_GEN_DECODE_TPS, "Finished generate case: decode tokens/s", labels=[*result_labels, "batch_size"]
        ),
        "ttft": GaugeMetricFamily(
            C.OM_RESULT_GEN_TTFT,
            "Finished generate case: time to first token (s)",
            labels=[*result_labels, "batch_size"],
        ),
        "pass_at_k": GaugeMetricFamily(
            C.OM_RESULT_VER_PASS_AT_K, "Finished verify case: pass@k of the last cycle", labels=[*result_labels, "k"]
        ),
        "compile_rate": GaugeMetricFamily(
            C.OM_RESULT_VER_COMPILE_RATE, "Finished verify case: compile rate of the last cycle", labels=result_labels
        ),
    }


def add_type_results(families: dict, labels: list[str], case: dict) -> None:
    trainer = case.get("trainer") or {}
    gen, ver = trainer.get("generate"), trainer.get("verify")
    if isinstance(gen, dict):
        for b in gen.get("batches") or []:
            for key, fam in (("decode_tps", "decode_tps"), ("ttft_s", "ttft")):
                v = b.get(key)
                mean = v.get("mean") if isinstance(v, dict) else None
                if mean is not None:
                    families[fam].add_metric([*labels, str(b.get("batch_size"))], float(mean))
    if isinstance(ver, dict):
        for k, v in (ver.get("pass_at_k") or {}).items():
            families["pass_at_k"].add_metric([*labels, str(k)], float(v))
        if ver.get("compile_rate") is not None:
            families["compile_rate"].add_metric(labels, float(ver["compile_rate"]))


def serve(metrics: OperatorMetrics, port: int, addr: str = "0.0.0.0") -> int:
    """Serve /metrics in a background thread; returns the bound port (port 0 picks a free one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server.server_port
