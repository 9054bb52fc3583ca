"""Scrape /metrics of a real running bench process; the last scrape agrees with the final JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from trainbench.trainer import contract as c


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == c.M_STATE:
                if s.value == 1:
                    out["state"] = s.labels[c.M_STATE]
                    out["state_labels"] = {k: v for k, v in s.labels.items() if k != c.M_STATE}
            elif s.name == c.M_INFO:
                out["info"] = s.labels
            else:
                out[s.name] = s.value
                out.setdefault("labels", {})[s.name] = s.labels
    return out


def test_scrape_during_and_after_a_real_run(tmp_path):
    args = [sys.executable, "-m", "trainbench.trainer", "--model", "tiny-qwen3", "--type", "rl-full"]
    args += ["--seq-len", "2048", "--steps", "6", "--warmup-steps", "2", "--device", "cpu", "--ac", "recompute"]
    args += ["--metrics-port", "0", "--linger", "30", "--case", "case-a", "--run-name", "run-1", "--pool", "cpu"]
    args += ["--json"]  # the result line on stdout marks the end
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1")
    )
    lines: list[str] = []
    got_port = threading.Event()
    done = threading.Event()
    port = []

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith(c.METRICS_PORT_LINE_PREFIX):
                port.append(int(line.split()[1]))
                got_port.set()
            if line.startswith(c.RESULT_LINE_PREFIX):
                done.set()

    threading.Thread(target=reader, daemon=True).start()
    try:
        assert got_port.wait(60), proc.stderr.read() if proc.poll() is not None else "no port line"
        states = []
        while not done.is_set():
            try:
                s = scrape(port[0])
                states.append(s["state"])
            except OSError:
                pass
            time.sleep(0.01)
            assert proc.poll() is None or done.is_set(), proc.stderr.read()
        final = scrape(port[0])  # --linger keeps the server up after the result line
    finally:
        proc.terminate()
        proc.wait(10)
    seen = set(states)
    assert "measuring" in seen or "warmup" in seen, seen  # scraped while it ran
    order = [st for i, st in enumerate(states) if i == 0 or states[i - 1] != st]
    assert order == sorted(order, key=c.STATES.index), order  # states only move forward
    res = json.loads(lines[-1][len(c.RESULT_LINE_PREFIX) :])
    last = res["steps"][-1]
    assert final["state"] == "done"
    assert final[c.M_STEP] == 8 == last["step"]
    assert final[c.M_STEPS_TOTAL] == 8
    assert abs(final[c.M_TPS] - last["tps"]) <= 1e-9 * last["tps"]
    assert abs(final[c.M_MFU] - last["mfu"]) <= 1e-9 * last["mfu"]
    assert abs(final[c.M_STEP_TIME] - last["step_time"]) <= 1e-12 + 1e-9 * last["step_time"]
    assert abs(final[c.M_LOSS] - last["loss"]) <= 1e-6
    labels = final["labels"][c.M_TPS]
    assert labels == {"run": "run-1", "case": "case-a", "model": "tiny-qwen3", "type": "rl-full", "pool": "cpu"}
    assert set(labels) == set(c.LABELS) and final["state_labels"] == labels
    info = final["info"]
    assert info["attn"] == res["attn_backend"] and info["ac"] == res["ac"] == "recompute"
    assert float(info["flops_per_token"]) == res["flops_per_token"]
