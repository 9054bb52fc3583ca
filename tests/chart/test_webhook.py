"""operator/controller/webhook.py against a real local HTTP server (stdlib http.server on a free port)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trainbench.operator.controller import webhook

RESULTS = {
    "schema": "trainbench.dev/results/v1",
    "run": "nightly-20261122-0200",
    "suite": "nightly",
    "cases": [
        {
            "id": "c1",
            "model": "qwen3-0.6b",
            "type": "sft-full",
            "seq_len": 8192,
            "ac": "recompute",
            "attn": "fa3",
            "pool": "h100",
            "hardware": "1xH100 HBM3",
            "phase": "Succeeded",
            "verdicts": {
                "mfu": {
                    "metric": "mfu",
                    "status": "regression",
                    "current": 15.1,
                    "baseline": 16.8,
                    "change_pct": -10.1,
                },
                "tps": {"metric": "tps", "status": "same", "current": 26000.0, "baseline": 26010.0, "change_pct": 0.0},
            },
        },
        {
            "id": "c2",
            "model": "qwen3-0.6b",
            "type": "rl-full",
            "seq_len": 65536,
            "ac": "recompute",
            "attn": "fa2",
            "pool": "a6000",
            "phase": "Failed",
            "reason": "OOMKilled",
            "message": "exit 137\nKilled",
        },
        {"id": "c3", "model": "qwen3-0.6b", "type": "rl-lora", "seq_len": 8192, "pool": "h100", "phase": "Succeeded"},
    ],
}


class Hook:
    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T/B/X"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook([])
    yield h
    h.close()


def test_regressions_and_failures_are_posted_as_slack_json(hook, monkeypatch):
    monkeypatch.setenv(webhook.ENV_URL, hook.url)
    assert webhook.notify_run(RESULTS, namespace="bench") is True
    (msg,) = hook.bodies
    assert msg["type"] == "application/json"
    payload = msg["json"]
    assert set(payload) == {"text", "blocks"}
    text = payload["text"]
    assert "run nightly-20261122-0200 of suite nightly in namespace bench: 1 regression(s), 1 failed case(s)" in text
    assert "qwen3-0.6b sft-full 8192 recompute fa3 on 1xH100 HBM3: mfu 16.8% -> 15.1% (-10.1%)" in text
    assert "qwen3-0.6b rl-full 65536 recompute fa2 on a6000: OOMKilled - Killed" in text
    assert "tps" not in text  # not a regression
    assert [b["type"] for b in payload["blocks"]] == ["section", "section", "section", "context"]


def test_nothing_to_report_sends_nothing(hook):
    clean = {**RESULTS, "cases": [RESULTS["cases"][2]]}
    assert webhook.notify_run(clean, url=hook.url) is False
    assert webhook.notify_run(RESULTS, url="") is False  # no URL configured: the webhook is off
    assert hook.bodies == []


def test_server_errors_are_retried_and_client_errors_are_not():
    h = Hook([503, 200])
    try:
        assert webhook.send(h.url, {"text": "x"}, retries=1) is True
        assert len(h.bodies) == 2
    finally:
        h.close()
    h = Hook([404])
    try:
        assert webhook.send(h.url, {"text": "x"}, retries=2) is False
        assert len(h.bodies) == 1
    finally:
        h.close()


def test_an_unreachable_webhook_never_raises():
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert webhook.notify_run(RESULTS, url=f"http://127.0.0.1:{port}/x", timeout=2, retries=0) is False
