"""`trainbench submit` (operator/submit.py): the nightly CronJob's command, without a cluster.

The command against an (emulated) API server, followed by the operator running the run, is in
test_cronjob_e2e.py.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import yaml

from trainbench import cli
from trainbench.operator import submit
from trainbench.operator.api import SpecError

SUITE = {
    "apiVersion": "trainbench.dev/v1alpha1",
    "kind": "BenchmarkRun",
    "metadata": {"labels": {"trainbench.dev/suite": "nightly"}},
    "spec": {
        "suite": "nightly",
        "pools": [{"name": "h100", "gpusPerNode": 8, "image": "ghcr.io/trainbench/trainer-cuda-hopper:0.1.0"}],
        "matrix": {"models": ["qwen3-0.6b"], "types": ["sft-full", "rl-lora"]},
    },
}
NOW = datetime(2026, 11, 22, 2, 0, 7, tzinfo=timezone.utc)


def test_dated_name_labels_and_annotations():
    run = submit.build_run(SUITE, now=NOW)
    assert run["metadata"]["name"] == "nightly-20261122-0200"
    assert run["metadata"]["labels"]["trainbench.dev/suite"] == "nightly"
    assert run["metadata"]["annotations"]["trainbench.dev/scheduled-at"] == "2026-11-22T02:00:07+00:00"
    assert run["spec"] == SUITE["spec"]
    assert "name" not in SUITE["metadata"]  # the template is not changed
    run = submit.build_run(SUITE, prefix="h100-nightly", now=NOW)
    assert run["metadata"]["name"] == "h100-nightly-20261122-0200"
    assert run["spec"]["suite"] == "nightly"


def test_a_bare_spec_gets_its_suite_from_the_prefix(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in SUITE["spec"].items() if k != "suite"}))
    run = submit.build_run(submit.load_suite(path), prefix="smoke", now=NOW)
    assert run["kind"] == "BenchmarkRun" and run["metadata"]["name"] == "smoke-20261122-0200"
    assert run["spec"]["suite"] == "smoke" and run["metadata"]["labels"]["trainbench.dev/suite"] == "smoke"


def test_bad_suites_are_refused_naming_the_field():
    bad = {**SUITE, "spec": {**SUITE["spec"], "matrix": {"models": ["no-such-model"]}}}
    with pytest.raises(SpecError) as err:
        submit.build_run(bad, now=NOW)
    assert err.value.field == "spec.matrix.models[0]"
    with pytest.raises(submit.SuiteError, match="DNS label"):
        submit.build_run(SUITE, prefix="Nightly_Run", now=NOW)


def test_cli_dry_run_and_errors(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    rc = cli.main(
        ["submit", str(path), "--name-prefix", "nightly", "--namespace", "bench", "--dry-run", "--now", NOW.isoformat()]
    )
    assert rc == 0
    run = yaml.safe_load(capsys.readouterr().out)
    assert run["metadata"]["name"] == "nightly-20261122-0200" and run["metadata"]["namespace"] == "bench"

    (tmp_path / "bad.yaml").write_text("kind: ConfigMap\napiVersion: v1\nspec: {}\n")
    assert cli.main(["submit", str(tmp_path / "bad.yaml"), "--dry-run"]) == 2
    assert "expected kind BenchmarkRun" in capsys.readouterr().err
    assert cli.main(["submit", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unreachable_api_is_a_clear_error(tmp_path, capsys, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    assert submit.main([str(path)]) == 1
    assert "cannot reach the cluster" in capsys.readouterr().err


def _run(name: str, phase: str | None, completed: str | None = None, created: str = "2026-01-01T00:00:00Z") -> dict:
    status = {"phase": phase, **({"completedAt": completed} if completed else {})} if phase else {}
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": status}


def test_runs_to_prune_keeps_the_newest_of_each_kind():
    runs = [
        _run("ok-1", "Succeeded", "2026-01-01T03:00:00Z"),
        _run("ok-3", "Succeeded", "2026-01-03T03:00:00Z"),
        _run("ok-2", "Succeeded", "2026-01-02T03:00:00Z"),
        _run("bad-1", "Failed", "2026-01-01T04:00:00Z"),
        _run("bad-2", "PartiallyFailed", "2026-01-02T04:00:00Z"),
        _run("running", "Running"),
        _run("new", None),
        _run("old-no-completion", "Succeeded", created="2025-12-01T00:00:00Z"),
    ]
    assert submit.runs_to_prune(runs, 2, 1) == ["bad-1", "ok-1", "old-no-completion"]
    assert submit.runs_to_prune(runs, 1, 0) == ["bad-1", "bad-2", "ok-1", "ok-2", "old-no-completion"]
    assert submit.runs_to_prune(runs, None, 0) == ["bad-1", "bad-2"]  # None: keep every Succeeded run
    assert submit.runs_to_prune(runs, None, None) == []
    assert submit.runs_to_prune(runs, 10, 10) == []


def test_negative_history_limit_is_refused(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    assert submit.main([str(path), "--keep-failed", "-1"]) == 2
    assert "--keep-failed must be 0 or more" in capsys.readouterr().err
