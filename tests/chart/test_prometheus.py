"""A real Prometheus server scrapes a real trainer bench process and the operator's /metrics; every Grafana
panel's query (variables substituted) returns data, and the chart's rules load and fire in the server.

Parts: Debian `prometheus` (started on a free port with a generated config and a tmp storage dir, 1 s scrape
interval); `python -m trainbench.trainer --model tiny-qwen3 --device cpu --metrics-port 0 --linger` (rank 0
serves /metrics); the operator's exporter (operator/controller/metrics.py) served standalone and fed with a finished
run whose results document is built by the operator's own code (operator/results/document.py) from the trainer's
real result JSON.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from trainbench.operator.controller import metrics as op_metrics
from trainbench.operator.plan import plan
from trainbench.operator.results.document import build_results

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "charts" / "trainbench" / "dashboards").glob("*.json"))
CI_VALUES = ROOT / "charts" / "trainbench" / "ci" / "nightly-values.yaml"
PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.skipif(not PROMETHEUS, reason="prometheus (Debian package) is not installed; `make tools`"),
    pytest.mark.timeout(240),
]

SUITE, RUN, LIVE_RUN, NS = "nightly", "nightly-20261122-0200", "nightly-20261123-0200", "bench"
SPEC = {
    "suite": SUITE,
    "pools": [
        {"name": "cpu", "image": "trainer:test", "hardware": "CPU"},
        {"name": "h100", "gpusPerNode": 8, "image": "ghcr.io/trainbench/trainer-cuda-hopper:0.1.0", "peakTFLOPs": 989},
    ],
    "matrix": {
        "models": ["tiny-qwen3"],
        "types": ["sft-full"],
        "seqLens": [128],
        "include": [
            {"model": "tiny-qwen3", "type": "rl-full", "pool": "cpu"},
            {"model": "tiny-qwen3", "type": "generate", "pool": "cpu"},
            {"model": "tiny-qwen3", "type": "verify", "pool": "cpu"},
        ],
    },
    "steps": 4,
    "warmupSteps": 1,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """A real bench run on CPU that keeps serving its /metrics for a while after it finished."""
    out = tmp_path_factory.mktemp("trainer") / "result.json"
    case = plan(SPEC)[0]
    cmd = [
        sys.executable, "-m", "trainbench.trainer",
        *case.trainer_args(run=LIVE_RUN, metrics_port=0),
        "--device", "cpu", "--output", str(out), "--linger", "180",
    ]  # fmt: skip
    err = open(out.parent / "stderr.log", "w")  # noqa: SIM115 (closed in finally, after the process)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=out.parent)
    try:
        port = None
        for line in proc.stdout:
            if line.startswith("TRAINBENCH_METRICS_PORT "):
                port = int(line.split()[1])
                break
        assert port, f"the trainer printed no metrics port: {(out.parent / 'stderr.log').read_text()[-3000:]}"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        _wait(lambda: out.exists() and out.stat().st_size > 0, 120, "the trainer's result JSON")
        yield {"port": port, "result": json.loads(out.read_text()), "case": case}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


@pytest.fixture(scope="module")
def operator_metrics(trainer):
    """The operator's exporter with one finished run (a real CPU case, a GPU case, a failed case) and one
    run in progress."""
    cases = plan(SPEC)
    cpu, h100, failed = cases[0], cases[1], cases[2]
    assert (cpu.pool, h100.pool, failed.type) == ("cpu", "h100", "rl-full")
    result = trainer["result"]
    gpu_result = copy.deepcopy(result)  # the same shape as a GPU trainer's JSON, with power and energy
    gpu_result.update(power_w={"mean": 655.0, "std": 3.0, "min": 650.0, "max": 661.0, "n": 3}, tokens_per_joule=39.7)
    gpu_result["peak_memory_gib"] = 31.7
    now = datetime.now(timezone.utc)
    outcomes = {
        cpu.id: {"phase": "Succeeded", "result": result},
        h100.id: {"phase": "Succeeded", "result": gpu_result},
        failed.id: {"phase": "Failed", "reason": "OOMKilled", "message": "exit 137"},
    }
    # the other types' result blocks (their panels; tests/extra runs them for real)
    gen, ver = cases[3], cases[4]
    batches = [{"batch_size": b, "decode_tps": {"mean": 90.0 * b}, "ttft_s": {"mean": 0.01 * b}} for b in (1, 8)]
    outcomes[gen.id] = {"phase": "Succeeded", "result": {**result, "metrics": {}, "generate": {"batches": batches}}}
    verify = {"compile_rate": 0.25, "pass_rate": 0.125, "pass_at_k": {"1": 0.125, "2": 0.23}}
    outcomes[ver.id] = {"phase": "Succeeded", "result": {**result, "metrics": {}, "verify": verify}}
    doc = build_results(RUN, SUITE, SPEC, cases, outcomes, now, now, {"executor": "test"})
    for case in doc["cases"]:
        if case["id"] == h100.id:
            case["verdicts"] = {"mfu": {"metric": "mfu", "status": "regression", "change_pct": -10.1}}
    # change points of the suite's history (report.finalize puts them there): a slowdown and an improvement
    point = {"case": h100.id, "metric": "tps", "run": "nightly-20261115-0200", "index": 8, "p_value": 1e-6}
    doc["change_points"] = [{**point, "change_pct": -12.5}, {**point, "metric": "mfu", "change_pct": 9.0}]
    store = op_metrics.OperatorMetrics()
    completed = {"phase": "PartiallyFailed", "completedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    store.update(NS, RUN, SUITE, completed, doc)
    running = {
        "phase": "Running",
        "cases": [{"id": cpu.id, "phase": "Running", "step": 2, "stepsTotal": 5, "pool": "cpu"}],
    }
    store.update(NS, LIVE_RUN, SUITE, running)
    return {"port": op_metrics.serve(store, 0, addr="127.0.0.1"), "doc": doc}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, trainer, operator_metrics, render_module):
    d = tmp_path_factory.mktemp("prometheus")
    rules = render_module(yaml.safe_load(CI_VALUES.read_text())).one("PrometheusRule")["spec"]
    (d / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(d / "rules.yaml")],
        "scrape_configs": [
            {"job_name": "trainer", "static_configs": [{"targets": [f"127.0.0.1:{trainer['port']}"]}]},
            {"job_name": "operator", "static_configs": [{"targets": [f"127.0.0.1:{operator_metrics['port']}"]}]},
        ],
    }
    (d / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = open(d / "prometheus.log", "w")  # noqa: SIM115 (closed in finally, after the process)
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, 60, "prometheus ready")

        def both_up():
            targets = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == 2 and all(t["health"] == "up" for t in targets) and targets

        _wait(both_up, 60, "both targets up")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if os.environ.get("TRAINBENCH_KEEP_PROMETHEUS_LOG"):
            print((d / "prometheus.log").read_text()[-5000:])


@pytest.fixture(scope="module")
def render_module(chart):
    def _render(values):
        out = chart.render(values, name="trainbench", namespace="trainbench")
        docs = [d for p, t in sorted(out.items()) if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]

        class R(list):
            def one(self, kind):
                (doc,) = [x for x in self if x["kind"] == kind]
                return doc

        return R(docs)

    return _render


def _query(url: str, expr: str) -> list:
    data = _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", data
    result = data["data"]["result"]
    return result if isinstance(result, list) else [result]


def _substitute(expr: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), expr)


def _panels():
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield pytest.param(
                    path.name, panel["title"], target["expr"], id=f"{path.stem}:{panel['title']}:{target['refId']}"
                )


def _variables():
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                yield pytest.param(var["query"]["query"], id=f"{path.stem}:{var['name']}")


ALL = {"suite": ".*", "model": ".*", "type": ".*", "pool": ".*"}


def _wait_for_data(url: str, expr: str, timeout: float = 30) -> list:
    return _wait(lambda: _query(url, expr), timeout, f"data for {expr}")


@pytest.mark.parametrize(("board", "title", "expr"), list(_panels()))
def test_every_panel_query_returns_data(prometheus, board, title, expr):
    # the first scrapes of both targets land within seconds; wait until the series are there
    _wait_for_data(prometheus, "trainbench_step")
    _wait_for_data(prometheus, "trainbench_result_mfu_percent")
    # `... or vector(0)` keeps a stat at 0 when nothing matches; the fixture has a regression and a failed
    # case, so the real part of the query must return data too
    expr = expr.removesuffix(" or vector(0)")
    result = _wait_for_data(prometheus, _substitute(expr, ALL), timeout=10)
    assert result, f"{board} / {title}: no data for {expr}"


def test_panels_filter_by_the_variables(prometheus, trainer):
    """With concrete variable values the live panels show exactly the running case."""
    case = trainer["case"]
    values = {"suite": SUITE, "model": case.model, "type": case.type, "pool": case.pool}
    live = json.loads((ROOT / "charts/trainbench/dashboards/trainbench-live.json").read_text())
    (tps,) = [p for p in live["panels"] if p["title"] == "Tokens per second"]
    series = _wait_for_data(prometheus, _substitute(tps["targets"][0]["expr"], values))
    assert {s["metric"]["case"] for s in series} == {case.id}
    none = _query(prometheus, _substitute(tps["targets"][0]["expr"], {**values, "pool": "no-such-pool"}))
    assert none == []


def test_result_panels_show_the_real_trainer_numbers(prometheus, trainer, operator_metrics):
    results = json.loads((ROOT / "charts/trainbench/dashboards/trainbench-results.json").read_text())
    (mfu,) = [p for p in results["panels"] if p["title"] == "MFU"]
    series = _wait_for_data(prometheus, _substitute(mfu["targets"][0]["expr"], {**ALL, "pool": "cpu"}))
    assert len(series) == 1
    assert float(series[0]["value"][1]) == pytest.approx(trainer["result"]["metrics"]["mfu"]["mean"])


@pytest.mark.parametrize("query", list(_variables()))
def test_dashboard_variables_have_values(prometheus, query):
    m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", query)
    assert m, query
    metric, label = m.groups()
    _wait_for_data(prometheus, metric)
    values = _get(f"{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": metric}))["data"]
    assert values, query


def test_chart_rules_load_and_fire_in_the_server(prometheus):
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules and all(r["health"] in ("ok", "unknown") for r in rules), rules

    def firing():
        alerts = _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        names = {(a["labels"]["alertname"], a["state"]) for a in alerts}
        want = {("TrainbenchRegressionDetected", "firing"), ("TrainbenchCaseFailed", "firing")}
        want.add(("TrainbenchChangePoint", "firing"))
        return want <= names and alerts

    alerts = _wait(firing, 30, "the regression and failure alerts to fire")
    by_name = {a["labels"]["alertname"]: a["labels"] for a in alerts}
    assert by_name["TrainbenchRegressionDetected"]["pool"] == "h100"
    # one alert per case (as the report and kubectl get br count regressions), not per metric
    assert "metric" not in by_name["TrainbenchRegressionDetected"] and by_name["TrainbenchRegressionDetected"]["case"]
    assert by_name["TrainbenchCaseFailed"]["reason"] == "OOMKilled"
    assert "TrainbenchRunFailed" not in by_name  # the run partially failed, it did not fail
    # the slowdown only (the MFU change point is an improvement), one alert per case and metric
    changed = [a["labels"] for a in alerts if a["labels"]["alertname"] == "TrainbenchChangePoint"]
    assert [(a["metric"], a["pool"], a["run"]) for a in changed] == [("tps", "h100", "nightly-20261115-0200")]
