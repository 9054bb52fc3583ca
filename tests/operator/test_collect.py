"""collect: result JSON from termination messages/stdout, /metrics parsing and scraping, exit classification."""

from __future__ import annotations

import json
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client import CollectorRegistry, Enum, Gauge, generate_latest, start_http_server

from trainbench.operator import collect
from trainbench.trainer import contract as C

RESULT = {"schema": C.RESULT_SCHEMA, "status": "ok", "metrics": {"tps": {"mean": 1.0}}, "steps": [1, 2, 3]}


def test_parse_result_from_stdout_line_bare_json_and_truncation():
    line = C.RESULT_LINE_PREFIX + json.dumps(RESULT, separators=(",", ":"))
    stdout = "loading...\nstep 1 tps 3\n" + line + "\n"
    assert collect.parse_result(stdout) == RESULT
    assert collect.parse_result(stdout.encode()) == RESULT
    assert collect.parse_result(json.dumps(RESULT, indent=1)) == RESULT  # a termination message: bare JSON
    assert collect.parse_result(line[:-7]) is None  # cut off: no half results
    assert collect.parse_result(json.dumps(RESULT)[:40]) is None
    assert collect.parse_result("") is None
    assert collect.parse_result(None) is None
    assert collect.parse_result("Traceback (most recent call last):\n  boom") is None
    assert collect.parse_result("[1, 2]") is None  # JSON, but not an object


def _registry(state: str = "measuring") -> CollectorRegistry:
    reg = CollectorRegistry()
    labels = list(C.LABELS)
    values = ["r", "c", "tiny-qwen3", "sft-full", "cpu"]
    for name, value in (
        (C.M_STEP, 4),
        (C.M_STEPS_TOTAL, 7),
        (C.M_TPS, 1234.5),
        (C.M_MFU, 12.5),
        (C.M_STEP_TIME, 0.25),
        (C.M_PEAK_MEMORY, 3 * 2**30),
        (C.M_POWER, 650.0),
        (C.M_ENERGY, 1200.0),
    ):
        Gauge(name, name, labels, registry=reg).labels(*values).set(value)
    e = Enum(C.M_STATE, "state", labels, states=list(C.STATES), registry=reg)
    e.labels(*values).state(state)
    return reg


def test_parse_metrics_reads_every_progress_field():
    p = collect.parse_metrics(generate_latest(_registry()).decode())
    assert p == {
        "state": "measuring",
        "step": 4,
        "steps_total": 7,
        "tps": 1234.5,
        "mfu": 12.5,
        "step_time": 0.25,
        "peak_memory_bytes": 3 * 2**30,
        "power_w": 650.0,
        "energy_j": 1200.0,
    }
    assert collect.parse_metrics("# nothing here\n")["step"] is None


def test_scrape_a_real_exporter():
    server, thread = start_http_server(0, addr="127.0.0.1", registry=_registry("warmup"))
    try:
        port = server.server_address[1]
        p = collect.scrape(f"127.0.0.1:{port}")
        assert p["state"] == "warmup" and p["step"] == 4
        assert collect.scrape(f"http://127.0.0.1:{port}/metrics")["tps"] == 1234.5
    finally:
        server.shutdown()
        thread.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scrape_errors_say_what_went_wrong():
    with pytest.raises(collect.ScrapeError, match="connection refused"):
        collect.scrape(f"127.0.0.1:{_free_port()}")

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        with pytest.raises(collect.ScrapeError, match="timed out after 0.3s"):
            collect.scrape(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
    finally:
        silent.close()

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"<html>{not metrics}</html>" if self.path == "/metrics" else b"nope"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Html)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        with pytest.raises(collect.ScrapeError, match="not Prometheus|no trainbench metrics"):
            collect.scrape(f"127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(collect.ScrapeError, match="HTTP 404"):
            collect.scrape(f"http://127.0.0.1:{httpd.server_address[1]}/other/metrics/x")
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(exit_code=0, result=RESULT), ("Succeeded", None)),
        (dict(exit_code=0, result=None), ("MetricsUnavailable", "MetricsUnavailable")),
        (
            dict(exit_code=C.EXIT_OOM, result=None, logs="x\ntrainbench bench: OutOfMemory: CUDA OOM"),
            ("Failed", "OutOfMemory"),
        ),
        (
            dict(
                exit_code=C.EXIT_BAD_CONFIG,
                result={"status": "failed", "error": {"reason": "BadConfig", "message": "m"}},
            ),
            ("Failed", "BadConfig"),
        ),
        (dict(exit_code=1, logs="Traceback\nRuntimeError: boom"), ("Failed", "Error")),
        (dict(exit_code=-signal.SIGKILL), ("Failed", "OOMKilled")),
        (dict(exit_code=137, oom_killed=True), ("Failed", "OOMKilled")),
        (dict(exit_code=-signal.SIGTERM, timed_out=True), ("Failed", "Timeout")),
        (dict(exit_code=-signal.SIGTERM, interrupted=True), ("Failed", "Interrupted")),
        (
            dict(exit_code=0, result={"status": "failed", "error": {"reason": "OutOfMemory", "message": "m"}}),
            ("Failed", "OutOfMemory"),
        ),
    ],
)
def test_classify_exit(kwargs, expected):
    phase, reason, message = collect.classify_exit(**kwargs)
    assert (phase, reason) == expected
    assert reason is None or reason in C.FAILURE_REASONS
    assert phase in C.CASE_PHASES


def test_classify_exit_messages_carry_the_reason_and_last_log_lines():
    logs = "\n".join(f"line {i}" for i in range(100)) + "\nRuntimeError: boom"
    _, _, msg = collect.classify_exit(1, None, logs)
    assert msg.startswith("exit code 1; last log lines:") and msg.endswith("RuntimeError: boom")
    assert "line 10\n" not in msg  # only the tail
    _, _, msg = collect.classify_exit(C.EXIT_OOM, None, "a\ntrainbench bench: OutOfMemory: CUDA out of memory")
    assert msg == "trainbench bench: OutOfMemory: CUDA out of memory"
    _, _, msg = collect.classify_exit(C.EXIT_BAD_CONFIG, {"error": {"reason": "BadConfig", "message": "--ep 2 ..."}})
    assert msg == "--ep 2 ..."
