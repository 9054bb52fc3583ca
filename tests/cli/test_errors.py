"""`trainbench` as a user meets it (issue 16): the top-level help and --version, a wrong flag answered with the
subcommand's usage, and every documented error as ONE line with the fix and a non-zero exit, never a traceback.
Real subprocesses of the installed entry point; the emulated Kubernetes API of tests/operator where a cluster
is needed."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from clihelpers import EXE, ROOT, one_error

from trainbench.cli import COMMANDS

SMOKE = ROOT / "examples" / "cpu-smoke.yaml"


def test_help_lists_every_subcommand_with_a_description(tb):
    p = tb("--help")
    assert p.returncode == 0, p.stderr
    for name, (_, text) in COMMANDS.items():
        assert any(line.split() and line.split()[0] == name and text[:30] in line for line in p.stdout.splitlines()), (
            name,
            p.stdout,
        )
    assert p.stdout.startswith("usage: trainbench {")  # what tests/images expects of the operator image


def test_version(tb):
    p = tb("--version")
    assert p.returncode == 0 and p.stdout.strip().startswith("trainbench 0.")


@pytest.mark.parametrize(
    "args, usage",
    [
        (["plan", str(SMOKE), "--bogus"], "usage: trainbench plan"),
        (["report", "x", "--nope"], "usage: trainbench report"),
        (["get", "--all"], "usage: trainbench get"),
        (["publish", "x", "--repository", "y"], "usage: trainbench publish"),
        (["submit", "x", "--bogus"], "usage: trainbench submit"),
    ],
)
def test_a_wrong_flag_shows_the_usage_of_its_subcommand(tb, args, usage):
    p = tb(*args)
    assert p.returncode == 2 and p.stderr.startswith(usage), p.stderr
    assert "Traceback" not in p.stderr and "unrecognized arguments" in p.stderr


def test_unknown_command_is_one_line_with_a_suggestion(tb):
    line = one_error(tb("rnu", str(SMOKE)), 2)
    assert "unknown command 'rnu'" in line and "did you mean 'run'" in line


def _closed_pipe(tb, *args) -> subprocess.CompletedProcess:
    """`trainbench ARGS | head -0`: the reader is gone before the first write."""
    proc = subprocess.Popen([str(EXE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tb.env)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(120)
    return subprocess.CompletedProcess(args, proc.returncode, "", err)


def test_plan_json_into_a_closed_pipe_ends_quietly(tb):
    p = _closed_pipe(tb, "plan", str(SMOKE), "--json")
    assert p.returncode == 141 and p.stderr == "", p.stderr


def test_report_json_into_a_closed_pipe_ends_quietly(tb, tmp_path, current):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(current))
    p = _closed_pipe(tb, "report", str(tmp_path / "run"), "--json")
    assert p.returncode == 141 and p.stderr == "", p.stderr


def test_run_without_local_and_without_a_kubeconfig_says_what_to_do(tb):
    line = one_error(tb("run", str(SMOKE)), 2)
    assert "--local" in line and "KUBECONFIG" in line and "--kubeconfig" in line, line
    assert "ConfigException" not in line


def test_a_missing_results_source_is_one_line(tb, tmp_path):
    line = one_error(tb("report", str(tmp_path / "nope")), 2)
    assert "no such file or folder" in line and "br/NAME" in line


def test_bench_with_an_unknown_model_prints_no_json(tb):
    p = tb("bench", "--model", "gpt-17", "--device", "cpu")
    assert p.returncode == 2 and p.stdout == "", p.stdout[:300]
    assert "unknown model 'gpt-17'" in one_error(p, 2)
    # --json: the machine line is there (its last stdout line), the human error still one line on stderr
    p = tb("bench", "--model", "gpt-17", "--device", "cpu", "--json")
    assert p.stdout.strip().splitlines()[-1].startswith("TRAINBENCH_RESULT {")
    assert json.loads(p.stdout.strip().split(" ", 1)[1])["error"]["reason"] == "BadConfig"
    one_error(p, 2)


# --- against the emulated cluster --------------------------------------------------------------------------------


def _manifest(tmp_path, **meta) -> str:
    doc = yaml.safe_load(SMOKE.read_text())
    doc["metadata"] = meta
    path = tmp_path / f"run-{len(list(tmp_path.glob('run-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_second_submit_of_the_same_name_says_what_to_do(ktb, tmp_path):
    path = _manifest(tmp_path, name="nightly-a")
    p = ktb("run", path)
    assert p.returncode == 0, p.stderr
    assert "benchmarkruns.trainbench.dev/nightly-a created in namespace default" in p.stdout
    line = one_error(ktb("run", path), 1)
    assert "'nightly-a' already exists in namespace default" in line and "generateName" in line, line
    assert "kubectl delete" in line and "(409)" not in line


def test_generate_name_gets_a_fresh_name_each_time(ktb, kubectl, tmp_path):
    path = _manifest(tmp_path, generateName="nightly-")
    for _ in range(2):
        p = ktb("run", path)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("benchmarkruns.trainbench.dev/nightly"), p.stdout
    names = [r["metadata"]["name"] for r in kubectl.get_json("benchmarkruns")["items"]]
    assert len(set(names)) == 2 and all(n.startswith("nightly-") and len(n) > len("nightly-") for n in names), names


def test_report_of_a_missing_configmap_is_one_line(ktb):
    line = one_error(ktb("report", "configmap/nightly-missing-results"), 2)
    assert "configmap/nightly-missing-results: cannot read it: no ConfigMap nightly-missing-results" in line


def _finished_run(kubectl, name: str, results: dict, phase: str = "Succeeded") -> None:
    """A run object whose status points at its results ConfigMap, as the operator leaves it."""
    doc = yaml.safe_load(SMOKE.read_text())
    doc["metadata"] = {"name": name}
    kubectl.apply(yaml.safe_dump(doc))
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-results"},
        "data": {"results.json": json.dumps(results)},
    }
    kubectl.apply(yaml.safe_dump(cm))
    status = {"phase": phase, "progress": "5/5", "resultsConfigMap": f"{name}-results", "observedGeneration": 1}
    kubectl("patch", "benchmarkrun", name, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def test_report_br_name_reads_the_runs_results_through_its_status(ktb, kubectl, current):
    _finished_run(kubectl, "nightly-20260207", current)
    for source in ("br/nightly-20260207", "benchmarkrun/nightly-20260207"):
        p = ktb("report", source)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("# Performance Benchmarks: nightly"), p.stdout[:200]
    line = one_error(ktb("report", "br/nightly-nope"), 2)
    assert "benchmarkrun/nightly-nope: not found in namespace default" in line and "trainbench get" in line


def test_report_br_name_of_an_unfinished_run_says_to_watch_it(ktb, kubectl):
    doc = yaml.safe_load(SMOKE.read_text())
    doc["metadata"] = {"name": "pending-run"}
    kubectl.apply(yaml.safe_dump(doc))
    line = one_error(ktb("report", "br/pending-run"), 2)
    assert "no results yet" in line and "trainbench watch pending-run" in line


def test_get_and_watch(ktb, kubectl, current, cluster, tmp_path):
    _finished_run(kubectl, "nightly-20260207", current)
    _finished_run(kubectl, "nightly-20260208", current, phase="PartiallyFailed")
    p = ktb("get")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SUITE", "PHASE", "CASES", "REGRESSIONS", "AGE"]
    assert {ln.split()[0]: ln.split()[2] for ln in lines[1:]} == {
        "nightly-20260207": "Succeeded",
        "nightly-20260208": "PartiallyFailed",
    }
    p = ktb("get", "nightly-20260207")
    assert p.returncode == 0 and "report: trainbench report br/nightly-20260207" in p.stdout, p.stdout
    assert json.loads(ktb("get", "nightly-20260207", "--json").stdout)["metadata"]["name"] == "nightly-20260207"
    p = ktb("watch", "nightly-20260207", "--interval", "0.2")
    assert p.returncode == 0 and "Succeeded" in p.stdout, p.stderr
    assert ktb("watch", "nightly-20260208", "--interval", "0.2").returncode == 1  # finished, not Succeeded
    doc = yaml.safe_load(SMOKE.read_text())
    doc["metadata"] = {"name": "waiting"}
    kubectl.apply(yaml.safe_dump(doc))
    line = one_error(ktb("watch", "waiting", "--interval", "0.2", "--timeout", "0.5"), 1)
    assert "still Pending after --timeout" in line
    line = one_error(ktb("get", "nope"), 2)
    assert "benchmarkrun/nope: not found in namespace default" in line
    # -n, --kubeconfig and --context go through the one loader (controller.client.choose)
    assert "no benchmarkruns in namespace other" in ktb("get", "-n", "other").stderr
    no_env = dict(ktb.env)
    no_env.pop("KUBECONFIG")
    p = subprocess.run(
        [str(EXE), "get", "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, env=no_env
    )
    assert p.returncode == 0 and "nightly-20260208" in p.stdout, p.stderr
    line = one_error(ktb("get", "--context", "no-such-context"), 2)
    assert "no-such-context" in line and "--context" in line


def test_submit_errors_are_one_line(tb, tmp_path):
    line = one_error(tb("submit", str(tmp_path / "nope.yaml")), 2)
    assert line == f"trainbench submit: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    line = one_error(tb("submit", str(SMOKE)), 1)
    assert "cannot reach the cluster" in line and "KUBECONFIG" in line and "--kubeconfig" in line
