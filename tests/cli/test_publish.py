"""Publishing (issue 16): a run's report.md and results.json land as a commit on a branch of a REAL git server on
loopback - `git daemon --enable=receive-pack` (git://) and `git http-backend` behind Python's http.server with a
Basic-auth check (https-like token auth) - through the `trainbench publish` entry point and through the operator
when a run with spec.publish finishes (emulated cluster, real kopf operator process).

What cannot be tested for real here: a real forge's pull-request API (no network). The pull request is opened
against a tiny local HTTP server that checks the request GitHub's REST API expects (POST /repos/{owner}/{repo}/pulls,
Bearer token, the JSON fields) and answers as GitHub does (201 with html_url; 422 "already exists").
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time

import yaml
from clihelpers import ROOT, one_error
from gitserver import bare_repo, git
from ophelpers import wait_for

from trainbench.operator import publish as P


def _results_folder(tmp_path, current) -> str:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(current))
    (out / "report.md").write_text("# Performance Benchmarks: nightly\n\nthe report\n")
    return str(out)


def _files(repo, branch: str) -> dict[str, str]:
    names = git("ls-tree", "-r", "--name-only", branch, cwd=repo).split()
    return {n: git("show", f"{branch}:{n}", cwd=repo) for n in names}


def test_publish_a_results_folder_to_git_daemon(tb, tmp_path, current, git_daemon):
    repo = bare_repo(git_daemon.base, "bench.git", main_file=None)
    folder = _results_folder(tmp_path, current)
    p = tb("publish", folder, "--repo", git_daemon.url("bench.git"), "--branch", "results")
    assert p.returncode == 0, p.stderr
    assert "(committed)" in p.stdout
    files = _files(repo, "results")
    suite, run = current["suite"], current["run"]
    assert set(files) == {f"benchmarks/{suite}/report.md", f"benchmarks/{suite}/results.json"}
    assert files[f"benchmarks/{suite}/report.md"].startswith("# Performance Benchmarks: nightly")
    assert json.loads(files[f"benchmarks/{suite}/results.json"])["run"] == run
    assert (
        git("log", "-1", "--format=%an %s", "results", cwd=repo).strip() == f"trainbench trainbench: {suite} run {run}"
    )
    # the same files again: nothing to commit, the branch stays where it is
    head = git("rev-parse", "results", cwd=repo).strip()
    p = tb("publish", folder, "--repo", git_daemon.url("bench.git"), "--branch", "results", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["changed"] is False and json.loads(p.stdout)["commit"] == head
    # a path template, a second branch
    p = tb("publish", folder, "--repo", git_daemon.url("bench.git"), "--branch", "runs", "--path", "runs/{suite}/{run}")
    assert p.returncode == 0, p.stderr
    assert f"runs/{suite}/{run}/report.md" in _files(repo, "runs")


def test_publish_errors_are_one_line(tb, tmp_path, current, git_daemon):
    folder = _results_folder(tmp_path, current)
    line = one_error(tb("publish", folder, "--repo", git_daemon.url("nope.git")), 1)
    assert line.startswith("trainbench: error: publish: git ") and "nope.git" in line
    bare_repo(git_daemon.base, "bench.git", main_file=None)
    line = one_error(tb("publish", folder, "--repo", git_daemon.url("bench.git"), "--path", "../outside"), 1)
    assert "must stay inside the repository" in line
    line = one_error(tb("publish", folder, "--repo", git_daemon.url("bench.git"), "--branch", "bad..name"), 1)
    assert "not a valid git branch name" in line
    assert "--repo" in one_error(tb("publish", folder), 2)


def test_publish_over_http_with_a_token_and_open_a_pull_request(tb, tmp_path, current, git_http):
    repo = bare_repo(git_http.root / "acme", "bench.git")  # main holds a README: the PR's base
    folder = _results_folder(tmp_path, current)
    url = git_http.url("acme/bench.git")
    token = {"TRAINBENCH_GIT_TOKEN": git_http.token, "TRAINBENCH_GIT_USERNAME": git_http.username}

    # no token: the server refuses, one line, exit 1
    line = one_error(tb("publish", folder, "--repo", url), 1)
    assert "git " in line and git_http.refused >= 1
    # a wrong token is refused, and is never printed
    line = one_error(tb("publish", folder, "--repo", url, env={**token, "TRAINBENCH_GIT_TOKEN": "wrong-t0ken"}), 1)
    assert "wrong-t0ken" not in line

    def answer(method, path, body, headers):
        if method == "POST" and path == "/api/repos/acme/bench/pulls":
            if headers.get("Authorization") != f"Bearer {git_http.token}":
                return 401, {"message": "Bad credentials"}
            if any(r["method"] == "POST" and r["path"] == path for r in git_http.api_requests[:-1]):
                return 422, {"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]}
            return 201, {"html_url": "https://forge.example/acme/bench/pull/7", "number": 7}
        if method == "GET" and path.startswith("/api/repos/acme/bench/pulls?"):
            return 200, [{"html_url": "https://forge.example/acme/bench/pull/7", "number": 7}]
        return 404, {"message": "Not Found"}

    git_http.api_answer = answer
    args = [
        "publish",
        folder,
        "--repo",
        url,
        "--branch",
        "bench/nightly",
        "--pr",
        "--base",
        "main",
        "--api",
        git_http.api,
    ]
    p = tb(*args, env=token)
    assert p.returncode == 0, p.stderr
    assert "pull request: https://forge.example/acme/bench/pull/7" in p.stdout
    post = git_http.api_requests[0]
    assert post["method"] == "POST" and post["accept"] == "application/vnd.github+json"
    assert post["body"]["head"] == "bench/nightly" and post["body"]["base"] == "main"
    assert post["body"]["title"] == f"trainbench: {current['suite']} results ({current['run']})"
    # the branch starts from main: the PR shows only the report
    files = _files(repo, "bench/nightly")
    assert "README.md" in files and f"benchmarks/{current['suite']}/report.md" in files
    assert git("merge-base", "main", "bench/nightly", cwd=repo).strip() == git("rev-parse", "main", cwd=repo).strip()
    # again: the open pull request is found instead of a second one
    (tmp_path / "run" / "report.md").write_text("# Performance Benchmarks: nightly\n\nnewer\n")
    p = tb(*args, env=token)
    assert p.returncode == 0 and "pull/7" in p.stdout, p.stderr
    assert [r["method"] for r in git_http.api_requests] == ["POST", "POST", "GET"]
    # a refused PR is one line with the forge's message
    git_http.api_answer = lambda *a: (403, {"message": "Resource not accessible by integration"})
    (tmp_path / "run" / "report.md").write_text("# newest\n")
    line = one_error(tb(*args, env=token), 1)
    assert "HTTP 403: Resource not accessible by integration" in line and git_http.token not in line


def test_report_urls():
    t = P.Target(repo="https://github.com/acme/bench.git", branch="results")
    kw = dict(folder_path="benchmarks/nightly", suite="nightly", run="n-1", date="2026-02-07")
    assert P.report_url(t, "abc123", **kw) == "https://github.com/acme/bench/blob/abc123/benchmarks/nightly/report.md"
    t = P.Target(repo="git@gitlab.example.com:group/sub/bench.git")
    assert (
        P.report_url(t, "c0ffee", **kw)
        == "https://gitlab.example.com/group/sub/bench/-/blob/c0ffee/benchmarks/nightly/report.md"
    )
    t = P.Target(repo="git://127.0.0.1:9418/bench.git", report_url_template="https://docs.example/{suite}/{run}")
    assert P.report_url(t, "c0ffee", **kw) == "https://docs.example/nightly/n-1"
    assert P.report_url(P.Target(repo="file:///srv/bench.git"), "c0ffee", **kw) is None
    assert P.api_base("https://github.com/acme/bench.git") == "https://api.github.com"
    assert P.api_base("https://ghe.example.com/acme/bench.git") == "https://ghe.example.com/api/v3"


# --- the operator publishes a finished run ------------------------------------------------------------------------


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_operator_publishes_a_finished_run_once(cluster, kubectl, operator, git_http):
    """One case that the fake kubelet OOM-kills at once (a 64Mi pool): the run fails fast, its results and report
    are written, spec.publish commits them over HTTP with the token of spec.publish.secretRef, and the webhook
    (sent for the failed case) links to the published report."""
    from kubernetes import client, config

    repo = bare_repo(git_http.root / "acme", "bench.git")
    cluster.sim.declare("", "v1", "secrets", "Secret", set(), True)  # the emulator serves Secrets for this test
    config.load_kube_config(config_file=str(cluster.kubeconfig))
    secret = {"username": git_http.username, "token": git_http.token}
    client.CoreV1Api().create_namespaced_secret(
        "default",
        {
            "metadata": {"name": "git-push"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()},
        },
    )
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    Hook.received.clear()
    operator.env = {"TRAINBENCH_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook"}
    operator.start()
    template = "https://reports.example/{branch}/{file}@{commit}"
    spec = {
        "suite": "pub",
        "pools": [{"name": "small", "nodeSelector": {"trainbench.dev/test-pool": "b"}, "image": "trainer:test",
                   "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}], "memory": "64Mi"}],
        "matrix": {"models": ["tiny-llama"], "types": ["sft-full"], "seqLens": [128]},
        "steps": 1, "warmupSteps": 0, "timeoutSeconds": 300,
        "publish": {"repo": git_http.url("acme/bench.git"), "branch": "nightly", "path": "runs/{suite}",
                    "secretRef": {"name": "git-push"}, "reportUrlTemplate": template},
    }  # fmt: skip
    run = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "pub-1"}, "spec": spec}
    kubectl.apply(yaml.safe_dump(run))

    def published():
        cm = kubectl("get", "configmap", "pub-1-results", "-o", "json", check=False)
        if cm.returncode:
            return None
        notes = json.loads(cm.stdout)["metadata"].get("annotations") or {}
        assert "trainbench.dev/publish-error" not in notes, notes
        return notes.get("trainbench.dev/published")

    record = json.loads(wait_for(published, 300, "the run to be published", on_fail=operator.log))
    files = _files(repo, "nightly")
    assert set(files) == {"runs/pub/report.md", "runs/pub/results.json"}  # no pullRequest: a branch of its own
    report = kubectl.get_json("configmap", "pub-1-report")["data"]["report.md"]
    assert files["runs/pub/report.md"] == report
    assert json.loads(files["runs/pub/results.json"])["run"] == "pub-1"
    head = git("rev-parse", "nightly", cwd=repo).strip()
    assert record["commit"] == head and record["branch"] == "nightly" and record["path"] == "runs/pub"
    assert record["reportUrl"] == f"https://reports.example/nightly/runs/pub/report.md@{head}"
    # the webhook's message links to it
    wait_for(lambda: Hook.received, 60, "the webhook", on_fail=operator.log)
    context = Hook.received[0]["blocks"][-1]["elements"][0]["text"]
    assert f"<{record['reportUrl']}|report>" in context
    # once: a restarted operator neither commits nor notifies again
    operator.stop()
    operator.start()
    wait_for(lambda: "pub-1" in operator.log(), 60, "the restarted operator to see the run")
    time.sleep(3)  # a few ticks of the restarted operator
    assert git("rev-parse", "nightly", cwd=repo).strip() == head
    assert len(Hook.received) == 1
    hook.shutdown()


def test_publish_br_name_takes_the_runs_spec_publish(ktb, kubectl, current, git_daemon, tmp_path):
    """`trainbench publish br/NAME`: the run's results and report ConfigMaps (through its status) go where its
    spec.publish says; --branch overrides it."""
    repo = bare_repo(git_daemon.base, "bench.git", main_file=None)
    doc = yaml.safe_load((ROOT / "examples" / "cpu-smoke.yaml").read_text())
    doc["metadata"] = {"name": "nightly-20260207"}
    doc["spec"]["publish"] = {"repo": git_daemon.url("bench.git"), "branch": "from-spec", "path": "r/{run}"}
    kubectl.apply(yaml.safe_dump(doc))
    for name, data in (
        ("nightly-20260207-results", {"results.json": json.dumps(current)}),
        ("nightly-20260207-report", {"report.md": "# the cluster's report\n"}),
    ):
        kubectl.apply(
            yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        )
    status = {
        "phase": "Succeeded",
        "resultsConfigMap": "nightly-20260207-results",
        "reportConfigMap": "nightly-20260207-report",
    }
    kubectl(
        "patch",
        "benchmarkrun",
        "nightly-20260207",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    p = ktb("publish", "br/nightly-20260207")
    assert p.returncode == 0, p.stderr
    run = current["run"]
    assert _files(repo, "from-spec") == {
        f"r/{run}/report.md": "# the cluster's report\n",
        f"r/{run}/results.json": _files(repo, "from-spec")[f"r/{run}/results.json"],
    }
    assert ktb("publish", "br/nightly-20260207", "--branch", "override").returncode == 0
    assert f"r/{run}/report.md" in _files(repo, "override")
    line = one_error(ktb("publish", "br/nightly-nope"), 2)
    assert "benchmarkrun/nightly-nope: not found" in line


def test_a_failed_publish_is_recorded_and_the_webhook_falls_back_to_the_template_link(
    cluster, kubectl, operator, git_daemon
):
    """spec.publish names a repository the server does not have: the run still finishes, the error is recorded on
    the results ConfigMap in one line, and the webhook links to TRAINBENCH_REPORT_URL_TEMPLATE instead."""
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    Hook.received.clear()
    operator.env = {
        "TRAINBENCH_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_port}/hook",
        "TRAINBENCH_REPORT_URL_TEMPLATE": "https://grafana.example/d/runs?ns={namespace}&run={run}&suite={suite}",
    }
    operator.start()
    spec = {
        "suite": "pub",
        "pools": [{"name": "small", "nodeSelector": {"trainbench.dev/test-pool": "b"}, "image": "trainer:test",
                   "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}], "memory": "64Mi"}],
        "matrix": {"models": ["tiny-llama"], "types": ["sft-full"], "seqLens": [128]},
        "steps": 1, "warmupSteps": 0, "timeoutSeconds": 300,
        "publish": {"repo": git_daemon.url("missing.git")},
    }  # fmt: skip
    run = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "pub-2"}, "spec": spec}
    kubectl.apply(yaml.safe_dump(run))

    def error():
        cm = kubectl("get", "configmap", "pub-2-results", "-o", "json", check=False)
        notes = json.loads(cm.stdout)["metadata"].get("annotations") or {} if cm.returncode == 0 else {}
        return notes.get("trainbench.dev/publish-error")

    text = wait_for(error, 300, "the publish error to be recorded", on_fail=operator.log)
    assert "\n" not in text and "git " in text and "missing.git" in text, text
    assert kubectl.get_json("benchmarkrun", "pub-2")["status"]["phase"] == "Failed"  # the OOM-killed case, not this
    wait_for(lambda: Hook.received, 60, "the webhook", on_fail=operator.log)
    context = Hook.received[0]["blocks"][-1]["elements"][0]["text"]
    assert "<https://grafana.example/d/runs?ns=default&run=pub-2&suite=pub|report>" in context
    hook.shutdown()
