"""The one kubeconfig loader (controller.client.connect) against the emulated API server: KUBECONFIG read when
a client is made (not when the kubernetes package was imported), --kubeconfig and --context, the context's
namespace as the default; `trainbench submit` goes through it too (it once ignored KUBECONFIG)."""

from __future__ import annotations

import yaml
from kubesim import Cluster

from trainbench.operator import submit
from trainbench.operator.controller import client as C


def _two_contexts(kubeconfig, out):
    cfg = yaml.safe_load(kubeconfig.read_text())
    first = cfg["contexts"][0]
    cfg["contexts"].append({"name": "other", "context": {**first["context"], "namespace": "team-b"}})
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_kubeconfig_variable_flag_and_context(tmp_path, monkeypatch):
    with Cluster(tmp_path / "cluster") as c:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        api = C.Api()
        assert api.namespace == "default" and api.list_configmaps("default", "x=y") == []

        two = _two_contexts(c.kubeconfig, tmp_path / "two.yaml")
        monkeypatch.delenv("KUBECONFIG")
        _, ns = C.connect(kubeconfig=str(two), context="other")
        assert ns == "team-b"
        C.choose(str(two), "other")  # what --kubeconfig/--context on the command line do
        try:
            assert C.Api().namespace == "team-b"
        finally:
            C.choose(None, None)

        # trainbench submit finds the cluster through KUBECONFIG alone
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        suite = tmp_path / "suite.yaml"
        suite.write_text(yaml.safe_dump({"pools": [{"name": "cpu"}], "matrix": {"models": ["tiny-llama"]}}))
        assert submit.main([str(suite), "--name-prefix", "kc", "--now", "2026-02-07T02:00:00Z"]) == 0
        runs = api.custom.list_namespaced_custom_object("trainbench.dev", "v1alpha1", "default", "benchmarkruns")
        assert [r["metadata"]["name"] for r in runs["items"]] == ["kc-20260207-0200"]
