"""The chart's nightly CronJob, end to end against the operator tests' emulated cluster (tests/operator/kubesim.py).

What a cluster would do at 02:00, with the chart's own objects: the CronJob's container command (`trainbench
submit` with the suite ConfigMap mounted) creates a dated BenchmarkRun through the API server, which admits it
against the chart's CRD (schema and CEL rules); the operator, started with the chart Deployment's arguments,
runs its case as a real trainer process and the run succeeds; the operator's /healthz (the chart's probes)
and /metrics answer. The CronJob's history limits prune older finished runs of the suite, and the chart's
`helm test` Pod (its command and environment as rendered) submits its tiny run, which the operator runs, and
passes on its report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_CRD = ROOT / "charts" / "trainbench" / "crds" / "benchmarkruns.trainbench.dev.yaml"
MOUNT = "/etc/trainbench/suite"
NAMESPACE = "default"
NODES = [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-a-0", "labels": {"trainbench.dev/test-pool": "a"}}}
]
VALUES = {
    "operator": {"extraArgs": ["--interval=1", "--watch-timeout=20", "--unschedulable-grace=5"]},
    "pools": {
        "cpu-a": {
            "image": "trainer:test",
            "hardware": "CPU",
            "resourceName": "amd.com/gpu",
            "gpusPerNode": 1,
            "nodes": 1,
            "cpu": "1",
            "nodeSelector": {"trainbench.dev/test-pool": "a"},
        }
    },
    "test": {"timeoutSeconds": 120},
    "suites": {
        "e2e-nightly": {
            "schedule": "0 2 * * *",
            "successfulRunsHistoryLimit": 1,
            "failedRunsHistoryLimit": 0,
            "pools": ["cpu-a"],
            "spec": {
                "matrix": {"models": ["tiny-qwen3"], "types": ["sft-full"], "seqLens": [128]},
                "steps": 2,
                "warmupSteps": 1,
                "timeoutSeconds": 300,
            },
        }
    },
}
pytestmark = [
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (Debian package) is not installed; `make tools`"),
    pytest.mark.timeout(300),
]


def _kubesim():
    """The operator tests' emulated cluster (owned by the operator part), loaded by path."""
    if "kubesim" in sys.modules:
        return sys.modules["kubesim"]
    path = ROOT / "tests" / "operator" / "kubesim" / "__init__.py"
    if not path.exists():
        pytest.fail("tests/operator/kubesim/ (the operator tests' emulated cluster) is missing")
    spec = importlib.util.spec_from_file_location("kubesim", path, submodule_search_locations=[str(path.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["kubesim"] = module
    spec.loader.exec_module(module)
    return module


def _wait(predicate, timeout: float, what: str, on_fail=lambda: ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except OSError as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n{on_fail()}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nightly_cronjob_creates_a_run_that_the_operator_runs(render, tmp_path):
    kubesim = _kubesim()
    docs = render(VALUES, namespace=NAMESPACE)
    cron = docs.one("CronJob", "trainbench-suite-e2e-nightly")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = pod["volumes"]
    cm = docs.one("ConfigMap", volume["configMap"]["name"])
    # the kubelet's view of the pod: the ConfigMap mounted where the container's arguments expect it
    mount = tmp_path / "suite"
    mount.mkdir()
    for key, text in cm["data"].items():
        (mount / key).write_text(text)
    args = [a.replace(MOUNT, str(mount)) for a in container["args"]]
    assert args[0] == "submit"

    with kubesim.Cluster(tmp_path / "cluster", nodes=NODES, crds=[yaml.safe_load(CHART_CRD.read_text())]) as cluster:
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
        env.pop("KUBERNETES_SERVICE_HOST", None)

        def submit():
            # the image's ENTRYPOINT is `trainbench`; the CronJob gives its arguments
            return subprocess.run(
                [sys.executable, "-m", "trainbench.cli", *args], env=env, capture_output=True, text=True, timeout=60
            )

        # finished runs of the suite from earlier nights: the history limits (1 Succeeded, 0 failed) keep the newest
        # Succeeded one; a run of another suite is not touched
        from kubernetes import client as kclient
        from kubernetes import config as kconfig

        custom = kclient.CustomObjectsApi(kconfig.new_client_from_config(str(cluster.kubeconfig)))
        old_runs = {"old-ok-1": ("e2e-nightly", "Succeeded", 1), "old-ok-2": ("e2e-nightly", "Succeeded", 2),
                    "old-failed": ("e2e-nightly", "Failed", 3), "other-suite": ("other", "Failed", 1)}  # fmt: skip
        spec = yaml.safe_load(cm["data"]["suite.yaml"])["spec"]
        for old, (suite, phase, day) in old_runs.items():
            body = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "spec": {**spec, "suite": suite},
                    "metadata": {"name": old, "labels": {"trainbench.dev/suite": suite}}}  # fmt: skip
            custom.create_namespaced_custom_object("trainbench.dev", "v1alpha1", NAMESPACE, "benchmarkruns", body)
            status = {"status": {"phase": phase, "completedAt": f"2026-01-0{day}T02:30:00Z"}}
            custom.patch_namespaced_custom_object_status(
                "trainbench.dev", "v1alpha1", NAMESPACE, "benchmarkruns", old, status
            )

        first = submit()
        assert first.returncode == 0, first.stderr
        assert "old-ok-1 deleted (suite history limit)" in first.stdout, first.stdout
        assert "old-failed deleted (suite history limit)" in first.stdout, first.stdout
        left = {
            o["metadata"]["name"] for o in cluster.objects("trainbench.dev", "v1alpha1", "benchmarkruns", NAMESPACE)
        }
        assert {"old-ok-2", "other-suite"} <= left and not {"old-ok-1", "old-failed"} & left, left
        for old in ("old-ok-2", "other-suite"):  # not for the operator to look at
            custom.delete_namespaced_custom_object("trainbench.dev", "v1alpha1", NAMESPACE, "benchmarkruns", old)
        assert first.stdout.startswith("benchmarkruns.trainbench.dev/e2e-nightly-2"), first.stdout
        name = first.stdout.split()[0].split("/", 1)[1]
        # a manual run in the same minute (kubectl create job --from=cronjob/...) gets its own name
        second = submit()
        assert second.returncode == 0, second.stderr
        other = second.stdout.split()[0].split("/", 1)[1]
        assert other != name and other.startswith(name)
        kubectl = ["kubectl", "-n", NAMESPACE]
        subprocess.run([*kubectl, "delete", "benchmarkrun", other], env=env, check=True, capture_output=True)

        run = json.loads(subprocess.run([*kubectl, "get", "benchmarkrun", name, "-o", "json"], env=env, check=True, capture_output=True, text=True).stdout)  # fmt: skip
        assert run["spec"]["suite"] == "e2e-nightly"
        assert run["metadata"]["labels"]["trainbench.dev/suite"] == "e2e-nightly"
        assert run["spec"]["pools"][0]["image"] == "trainer:test"

        # the operator with the chart Deployment's arguments (ports moved to free ones)
        dep = docs.one("Deployment")
        op_args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={NAMESPACE}" in op_args
        live_port = _free_port()
        op_args = [
            "--metrics-port=0" if a.startswith("--metrics-port=") else f"--liveness-port={live_port}" if a.startswith("--liveness-port=") else a
            for a in op_args
        ]  # fmt: skip
        log_path = tmp_path / "operator.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainbench.cli", *op_args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            try:
                line = proc.stdout.readline()
                assert line.startswith("TRAINBENCH_OPERATOR_METRICS_PORT"), line + log_path.read_text()[-3000:]
                metrics_port = int(line.split()[1])
                probe = dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"]
                _wait(
                    lambda: urllib.request.urlopen(f"http://127.0.0.1:{live_port}{probe}", timeout=2).status == 200,
                    30,
                    "the liveness endpoint",
                )

                def phase():
                    (obj,) = [
                        o
                        for o in cluster.objects("trainbench.dev", "v1alpha1", "benchmarkruns", NAMESPACE)
                        if o["metadata"]["name"] == name
                    ]
                    status = obj.get("status") or {}
                    return status.get("phase") in ("Succeeded", "PartiallyFailed", "Failed") and status

                status = _wait(phase, 180, f"run {name} to end", on_fail=lambda: log_path.read_text()[-4000:])
                assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
                done = (
                    f'trainbench_run_completion_timestamp_seconds{{phase="Succeeded",run="{name}",suite="e2e-nightly"}}'
                )

                def scraped():  # the gauges follow the status write in the same tick: wait for them, no race
                    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
                    return done in text.decode() and text.decode()

                text = _wait(scraped, 30, "the run's completion gauge")
                assert "trainbench_result_mfu_percent{" in text

                # `helm test`: the chart's test Pod, its command and environment as rendered
                (test_pod,) = [d for d in docs.kinds("Pod") if d["metadata"]["annotations"]["helm.sh/hook"] == "test"]
                (tc,) = test_pod["spec"]["containers"]
                test_env = {e["name"]: e["value"] for e in tc["env"]}
                assert json.loads(test_env["TRAINBENCH_TEST_RUN"])["spec"]["pools"][0]["name"] == "cpu-a"
                helm_test = subprocess.run(
                    [sys.executable, *tc["command"][1:], *tc["args"]],
                    env={**env, **test_env, "TRAINBENCH_TEST_INTERVAL": "1"},
                    capture_output=True,
                    text=True,
                    timeout=200,
                )
                assert helm_test.returncode == 0, helm_test.stdout + helm_test.stderr + log_path.read_text()[-3000:]
                assert "PASS: run trainbench-test Succeeded" in helm_test.stdout
                assert "# Performance Benchmarks" in helm_test.stdout  # the report it printed
                assert not [o for o in cluster.objects("trainbench.dev", "v1alpha1", "benchmarkruns", NAMESPACE)
                            if o["metadata"]["name"] == "trainbench-test"]  # fmt: skip
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
        # JSON logs, as the chart asks for
        first_line = log_path.read_text().splitlines()[0]
        assert json.loads(first_line)["level"]
