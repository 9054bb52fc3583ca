"""The CLI against a Kubernetes API: results and baselines from ConfigMaps, `trainbench run` submitting.

Uses the operator tests' emulated cluster (tests/operator/kubesim.py: KMock's KubernetesEmulator with
discovery, the CRD's schema and the status subresource) through the real kubernetes client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from trainbench.cli import main as cli

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kubesim import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(tmp_path, monkeypatch):
    from kubernetes import client, config

    with Cluster(tmp_path / "cluster") as c:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        config.load_kube_config(config_file=str(c.kubeconfig))
        yield client


def _configmap(api, name: str, data: dict) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    api.CoreV1Api().create_namespaced_config_map("default", body)


def test_report_and_compare_from_configmaps(api, capsys, current, baseline_results):
    _configmap(api, "nightly-20260207-results", {"results.json": json.dumps(current)})
    _configmap(api, "nightly-20260206-results", {"results.json": json.dumps(baseline_results)})
    code = cli(["report", "configmap/nightly-20260207-results", "--baseline", "configmap/nightly-20260206-results"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "**26.01k** :warning: (-8.0%)" in out
    assert "configmap/nightly-20260206-results (4 of 5 cases matched)" in out
    assert cli(["compare", "configmap/nightly-20260206-results", "configmap/nightly-20260207-results", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["regressions"] == 2
    assert cli(["report", "configmap/missing"]) == 2
    assert "configmap/missing: cannot read it" in capsys.readouterr().err
    _configmap(api, "other", {"x": "y"})
    assert cli(["report", "configmap/other"]) == 2
    assert "has no results.json key" in capsys.readouterr().err


def test_run_without_local_submits_the_benchmarkrun(api, capsys, tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "cpu-smoke.yaml").read_text())
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli(["run", str(path)]) == 0
    assert "benchmarkruns.trainbench.dev/cpu-smoke created in namespace default" in capsys.readouterr().out
    obj = api.CustomObjectsApi().get_namespaced_custom_object(
        "trainbench.dev", "v1alpha1", "default", "benchmarkruns", "cpu-smoke"
    )
    assert obj["spec"]["matrix"]["models"] == ["tiny-qwen3"]
    assert cli(["run", str(path)]) == 1  # already there: one line that says what to do
    assert "BenchmarkRun 'cpu-smoke' already exists in namespace default" in capsys.readouterr().err
