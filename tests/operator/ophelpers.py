"""Helpers for the operator tests: the real kubectl, `trainbench operator` as a subprocess, waiting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

NODES = [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-a-0", "labels": {"trainbench.dev/test-pool": "a"}}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-b-0", "labels": {"trainbench.dev/test-pool": "b"}}},
]


class Kubectl:
    """The real kubectl, pointed at a kubeconfig."""

    def __init__(self, kubeconfig: Path, namespace: str = "default"):
        self.env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        self.namespace = namespace

    def __call__(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        cmd = ["kubectl", "-n", self.namespace, *args]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, input=stdin, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
        return r

    def apply(self, manifest: str, check: bool = True) -> subprocess.CompletedProcess:
        return self("apply", "--validate=false", "-f", "-", stdin=manifest, check=check)

    def get_json(self, *args: str):
        return json.loads(self("get", *args, "-o", "json").stdout)


class Operator:
    """`trainbench operator` as a subprocess (exactly the entry point a cluster runs)."""

    def __init__(self, kubeconfig: Path, workdir: Path, namespace: str = "default", extra: tuple = ()):
        self.kubeconfig, self.workdir, self.namespace, self.extra = kubeconfig, workdir, namespace, extra
        self.env: dict[str, str] = {}
        self.all_namespaces = False
        self.liveness_port = -1
        self.proc: subprocess.Popen | None = None
        self.metrics_port: int | None = None
        self.starts = 0

    def start(self) -> Operator:
        self.starts += 1
        self.log_path = self.workdir / f"operator-{self.starts}.log"
        cmd = [
            sys.executable, "-m", "trainbench.cli", "operator",
            *(["--all-namespaces"] if self.all_namespaces else ["--namespace", self.namespace]),
            "--interval", "1",
            "--metrics-port", "0",
            "--liveness-port", str(self.liveness_port),
            "--watch-timeout", "20",
            "--unschedulable-grace", "2",
            "--image-pull-grace", "2",
            *self.extra,
        ]  # fmt: skip
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), **self.env)
        self._log = open(self.log_path, "w")  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True)
        line = self.proc.stdout.readline()  # TRAINBENCH_OPERATOR_METRICS_PORT <port>
        assert line.startswith("TRAINBENCH_OPERATOR_METRICS_PORT"), f"operator did not start: {line!r}\n{self.log()}"
        self.metrics_port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)  # kopf's graceful stop takes a few seconds (test_restart checks it ends)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self._log.close()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): no cleanup at all, like a crashed pod."""
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self._log.close()

    def log(self) -> str:
        return "\n".join(p.read_text()[-6000:] for p in sorted(self.workdir.glob("operator-*.log")))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, on_fail=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    extra = on_fail() if on_fail else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n{extra}")


def run_ended(kubectl, operator, name: str, timeout: float = 180) -> dict:
    """Wait until the BenchmarkRun `name` names its results ConfigMap (its finish is written); its status."""
    return wait_for(
        lambda: (s := kubectl.get_json("br", name).get("status") or {}).get("resultsConfigMap") and s,
        timeout,
        f"run {name} to end",
        on_fail=operator.log,
    )


def run_results(kubectl, name: str) -> dict:
    """The results document of a finished run, from its `<run>-results` ConfigMap."""
    return json.loads(kubectl.get_json("configmap", f"{name}-results")["data"]["results.json"])
