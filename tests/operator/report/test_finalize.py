"""One finish pipeline: the report the operator writes into a ConfigMap and the report the local executor
writes into its folder are the same document when they finish the same results with the same baseline and
history; `trainbench report DIR` keeps the History section of a local run's folder.

The cluster side runs the operator's own finish step (controller.handlers.write_results) against the emulated
API server (tests/operator/kubesim.py) through the real kubernetes client; the local side is local.finish."""

from __future__ import annotations

import io
import json

import pytest
from kubesim import Cluster

from trainbench.cli import main as cli
from trainbench.operator import kube as K
from trainbench.operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION, parse_spec
from trainbench.operator.controller import handlers
from trainbench.operator.controller.client import Api
from trainbench.operator.local import LocalOptions, finish
from trainbench.operator.results import document as R
from trainbench.operator.results import history as H

NS = "default"


def _run(api: Api, name: str, spec: dict) -> dict:
    """A BenchmarkRun in the cluster: the owner of its ConfigMaps (without one they would be collected)."""
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}
    api.create_custom(GROUP, VERSION, PLURAL, NS, body)
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


@pytest.fixture
def earlier(fx, baseline_results):
    """The suite's runs before `current`, oldest first (the last one is the pinned baseline too)."""
    runs = [
        fx.make_results(
            f"nightly-2026020{i + 3}", fx.scaled({("qwen3-0.6b", "sft-full", "h100"): f}), when=86400 * (i - 2)
        )
        for i, f in enumerate((1.0, 1.03))
    ]
    return [*runs, baseline_results]


def _lines_without_plots(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("![")]  # the plot images


def test_cluster_and_local_reports_of_one_results_file_are_the_same_document(
    tmp_path, monkeypatch, fx, current, earlier
):
    results_file = R.write_results(current, tmp_path / "results.json")
    spec = fx.SPEC | {"baseline": {"source": "configMap", "configMap": "golden"}}
    with Cluster(tmp_path / "cluster") as c:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        api = Api()
        pinned = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "golden", "namespace": NS}}
        api.create({**pinned, "data": {R.CONFIGMAP_KEY: json.dumps(earlier[-1])}})
        for doc in earlier:  # the suite's earlier runs, as the operator left them
            data = {R.CONFIGMAP_KEY: R.configmap_text(doc)}
            name = K.results_configmap_name(doc["run"])
            api.create(K.build_configmap(_run(api, doc["run"], fx.SPEC), name, data, namespace=NS, suite="nightly"))

        # the operator's finish step
        handlers.write_results(
            api, _run(api, current["run"], spec), R.load_results(results_file), parse_spec(spec), NS, "nightly"
        )
        cm = api.read_configmap(NS, K.report_configmap_name(current["run"]))
        cluster = cm["data"][R.REPORT_KEY]
        written = json.loads(api.read_configmap(NS, K.results_configmap_name(current["run"]))["data"][R.CONFIGMAP_KEY])

        # the local executor's finish step: the same baseline, the same earlier runs in the folder's history
        local = {}
        for plots in (False, True):
            out = tmp_path / f"local-{plots}"
            out.mkdir()
            H.save(H.from_results(earlier), out / H.CONFIGMAP_KEY)
            opts = LocalOptions(out=out, baseline="configmap/golden", plots=plots, log=io.StringIO())
            local[plots] = finish(R.load_results(results_file), out, opts).report

    assert cluster == local[False]
    assert "## History (last 10 runs)" in cluster and ":warning:" in cluster
    assert "**Baseline:** configmap/golden (4 of 5 cases matched)" in cluster
    assert written["summary"] == json.loads((tmp_path / "local-False" / "results.json").read_text())["summary"]
    # with plots the local report only adds the plot images (a ConfigMap cannot hold them)
    assert local[True] != local[False] and "![" in local[True]
    assert [x for x in _lines_without_plots(local[True]) if x] == [x for x in cluster.splitlines() if x]


def test_report_of_a_local_folder_keeps_its_history_section(tmp_path, fx, current, earlier):
    out = tmp_path / "run"
    out.mkdir()
    H.save(H.from_results(earlier), out / H.CONFIGMAP_KEY)
    written = finish(current, out, LocalOptions(out=out, log=io.StringIO())).report
    assert "## History" in written
    again = tmp_path / "again"
    assert cli(["report", str(out), "--out", str(again)]) == 0
    assert (again / "report.md").read_text() == written
