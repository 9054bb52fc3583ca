"""The operator image, built for real: its command line, its CRD, and the operator running under the chart's pod
security settings against the operator tests' emulated cluster (tests/operator/kubesim/)."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from .conftest import ROOT

CHART_CRD = ROOT / "charts" / "trainbench" / "crds" / "benchmarkruns.trainbench.dev.yaml"
MANIFEST_CRD = ROOT / "manifests" / "crd.yaml"
pytestmark = pytest.mark.timeout(600)


def _git_head() -> str | None:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_provenance_labels_and_environment(engine, operator_image, built):
    info = engine.inspect(operator_image)
    labels = info["Config"]["Labels"]
    entry = built["images"]["operator"]
    assert labels["org.opencontainers.image.title"] == "trainbench-operator"
    assert labels["org.opencontainers.image.revision"] == entry["revision"] != "unknown"
    assert labels["org.opencontainers.image.created"] == entry["created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels["org.opencontainers.image.created"])
    assert labels["dev.trainbench.kopf.version"]
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["TRAINBENCH_IMAGE_REVISION"] == entry["revision"]
    assert env["TRAINBENCH_IMAGE_CREATED"] == entry["created"]
    assert env["TRAINBENCH_IMAGE_VERSION"] == labels["org.opencontainers.image.version"]
    assert info["Config"]["User"] == "10001:10001"
    # pinned kopf is what is installed; no torch in the operator image
    out = engine("run", "--rm", "--entrypoint", "python", operator_image, "-c",
                 "import importlib.metadata as m, importlib.util as u; print(m.version('kopf'), u.find_spec('torch') is None)")  # fmt: skip
    assert out.stdout.split() == [labels["dev.trainbench.kopf.version"], "True"]


def test_help(engine, operator_image):
    out = engine("run", "--rm", operator_image, "--help")
    assert out.stdout.startswith("usage: trainbench {"), out.stdout
    for sub in ("operator", "plan", "submit", "run", "report"):
        assert sub in out.stdout
    out = engine("run", "--rm", operator_image, "operator", "--help")
    assert "--namespace" in out.stdout and "--print-crd" in out.stdout, out.stdout


def test_plan_of_the_cpu_smoke_example(engine, operator_image, built):
    out = engine(
        "run", "--rm", "-v", f"{ROOT / 'examples'}:/examples:ro", operator_image, "plan", "/examples/cpu-smoke.yaml"
    )
    here = subprocess.run([sys.executable, "-m", "trainbench.cli", "plan", str(ROOT / "examples" / "cpu-smoke.yaml")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    if built["images"]["operator"]["revision"] == _git_head():
        assert out.stdout == here.stdout  # the same code: the same plan
    else:  # the image was built from another revision (or a dirty tree): the same number of cases at least
        assert out.stdout.splitlines()[-1] == here.stdout.splitlines()[-1], out.stdout
    assert re.search(r"^5 case\(s\) in BenchmarkRun cpu-smoke$", out.stdout, re.M), out.stdout


def test_printed_crd_is_the_charts_copy(engine, operator_image):
    """`trainbench crd` (the CRD generated from the API types in the image) is what the chart and manifests/
    ship; images built before that command existed print it with `operator --print-crd`."""
    out = engine("run", "--rm", operator_image, "crd", check=False)
    if out.returncode == 2 and "unknown command 'crd'" in out.stderr:
        out = engine("run", "--rm", operator_image, "operator", "--print-crd")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["kind"] == "CustomResourceDefinition"
    assert printed == yaml.safe_load(CHART_CRD.read_text()), "the image's CRD differs from the chart's copy"
    assert printed == yaml.safe_load(MANIFEST_CRD.read_text()), "the image's CRD differs from manifests/crd.yaml"


def _kubesim():
    """The operator tests' emulated cluster (tests/operator/kubesim/), loaded by path as tests/chart does."""
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json_log(line: str) -> bool:
    try:
        return "level" in json.loads(line)
    except ValueError:
        return False


def _security_flags(dep: dict) -> list[str]:
    """`podman run` flags for the chart Deployment's pod/container security settings, memory limit and volumes.
    Every setting the chart makes is translated or the test fails: nothing is silently left out."""
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    psc, csc = pod["securityContext"], container["securityContext"]
    flags = [f"--user={psc['runAsUser']}:{psc['runAsGroup']}", f"--group-add={psc['fsGroup']}"]
    assert psc["runAsNonRoot"] and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default seccomp profile
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    flags += ["--read-only", "--read-only-tmpfs=false", "--security-opt=no-new-privileges", "--cap-drop=ALL"]
    memory = container["resources"]["limits"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", memory).groups()
    flags.append(f"--memory={int(number) * (1024 if unit == 'Gi' else 1)}m")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume, f"chart volume {volume} has no translation here"
        flags.append(f"--tmpfs={mount['mountPath']}:rw,size=64m,mode=1777")  # an emptyDir: writable by the pod
    return flags


def test_operator_runs_a_benchmarkrun_under_the_chart_pod_security(engine, operator_image, chart_deployment, tmp_path):
    """The containerised operator, with the chart Deployment's arguments, security context, memory limit and
    volumes, watches the emulated cluster (host network; kubeconfig mounted), answers its liveness probe, and
    runs a one-case BenchmarkRun to Succeeded (the emulated kubelet runs the case's pod as a local process).
    A SIGTERM stops it cleanly."""
    kubesim = _kubesim()
    (container,) = chart_deployment["spec"]["template"]["spec"]["containers"]
    live_port, metrics_port = _free_port(), _free_port()
    args = [
        f"--liveness-port={live_port}" if a.startswith("--liveness-port=") else
        f"--metrics-port={metrics_port}" if a.startswith("--metrics-port=") else
        "--namespace=default" if a.startswith("--namespace=") else a
        for a in container["args"]
    ] + ["--interval=1", "--watch-timeout=20", "--unschedulable-grace=5"]  # fmt: skip
    assert args[0] == "operator" and "--namespace=default" in args
    probe = container["livenessProbe"]["httpGet"]["path"]
    nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-0", "labels": {"pool": "cpu"}}}]
    name = f"img-op-{tmp_path.name[-6:].lower().strip('_-') or 'x'}"
    run = {
        "apiVersion": "trainbench.dev/v1alpha1",
        "kind": "BenchmarkRun",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "pools": [{"name": "cpu", "hardware": "CPU", "gpusPerNode": 1, "resourceName": "amd.com/gpu",
                       "image": "trainer:test", "cpu": "1", "nodeSelector": {"pool": "cpu"}}],
            "matrix": {"models": ["tiny-qwen3"], "types": ["sft-full"], "seqLens": [128]},
            "steps": 2,
            "warmupSteps": 1,
            "timeoutSeconds": 300,
        },
    }  # fmt: skip
    cid = None
    with kubesim.Cluster(tmp_path / "cluster", nodes=nodes, crds=[yaml.safe_load(CHART_CRD.read_text())]) as cluster:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(cluster.kubeconfig.read_text())
        kubeconfig.chmod(0o644)
        try:
            cid = engine(
                "run", "-d", "--network=host", *_security_flags(chart_deployment),
                "-v", f"{kubeconfig}:/etc/trainbench/kubeconfig:ro", "-e", "KUBECONFIG=/etc/trainbench/kubeconfig",
                operator_image, *args,
            ).stdout.strip()  # fmt: skip

            def logs() -> str:
                return engine("logs", cid, check=False).stderr[-4000:]

            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{live_port}{probe}", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                state = engine("inspect", "--format", "{{.State.Status}}", cid).stdout.strip()
                assert state == "running" and time.monotonic() < deadline, f"no {probe} answer ({state}):\n{logs()}"
                time.sleep(0.5)

            from kubernetes import client, config

            api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))
            api.create_namespaced_custom_object("trainbench.dev", "v1alpha1", "default", "benchmarkruns", run)
            deadline = time.monotonic() + 240
            status: dict = {}
            while time.monotonic() < deadline:
                (obj,) = [o for o in cluster.objects("trainbench.dev", "v1alpha1", "benchmarkruns", "default")
                          if o["metadata"]["name"] == name]  # fmt: skip
                status = obj.get("status") or {}
                if status.get("phase") in ("Succeeded", "PartiallyFailed", "Failed"):
                    break
                time.sleep(1)
            assert status.get("phase") == "Succeeded", json.dumps(status, indent=1)[-3000:] + "\n" + logs()
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            assert "trainbench_result_mfu_percent{" in text
            state = json.loads(engine("inspect", cid).stdout)[0]["State"]
            assert state["Running"] and not state["OOMKilled"], state
            stop = engine("stop", "--time=30", cid)
            assert stop.returncode == 0
            exit_code = engine("inspect", "--format", "{{.State.ExitCode}}", cid).stdout.strip()
            assert exit_code == "0", f"the operator exited {exit_code} on SIGTERM:\n{logs()}"
            assert any(_json_log(line) for line in logs().splitlines()), "the operator logs JSON lines"
        finally:
            if cid:
                engine("rm", "-f", cid, check=False)
