"""The finish step of the operator against the emulated API server (real kubernetes client, real HTTP webhook):
"written" is what the cluster holds (the run's own results ConfigMap), not what the run's status says, and the
webhook goes out once, after a status that records the results.

The run's Jobs and pods are given as an observation (every case ended, one of them OOMKilled); the
ConfigMaps, their reads and writes, and the webhook are real."""

from __future__ import annotations

import copy
import http.server
import json
import logging
import threading

import kopf
import pytest
from kubesim import Cluster

from trainbench.operator import api as A
from trainbench.operator import kube as K
from trainbench.operator.controller import handlers, reconcile, webhook
from trainbench.operator.controller.client import Api
from trainbench.operator.plan import plan

NS = "default"
SPEC = {"pools": [{"name": "h100"}], "matrix": {"models": ["qwen3-0.6b"], "seqLens": [1024, 2048]}}
RESULT = '{"status": "ok", "metrics": {"tps": {"mean": 10}}}'


class Hook(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook(monkeypatch):
    Hook.bodies = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(webhook.ENV_URL, f"http://127.0.0.1:{server.server_port}/hook")
    yield Hook.bodies
    server.shutdown()


def _ended(cases, run_name) -> reconcile.Observed:
    """Every case's Job has ended: the first succeeded, the second was OOMKilled."""
    obs = reconcile.Observed()
    for i, case in enumerate(cases):
        name = K.job_name(run_name, case.id)
        cond = "Complete" if i == 0 else "Failed"
        term = {"exitCode": 0, "message": RESULT} if i == 0 else {"exitCode": 137, "reason": "OOMKilled"}
        obs.jobs[name] = {
            "metadata": {"name": name, "creationTimestamp": "2026-02-07T01:00:00Z"},
            "spec": {},
            "status": {"conditions": [{"type": cond, "status": "True"}]},
        }
        state = {"terminated": {**term, "finishedAt": "2026-02-07T01:05:00Z"}}
        obs.pods[name] = [
            {
                "metadata": {"name": f"{name}-p", "creationTimestamp": "2026-02-07T01:00:00Z"},
                "spec": {"nodeName": "n"},
                "status": {
                    "phase": "Succeeded" if i == 0 else "Failed",
                    "containerStatuses": [{"name": "trainer", "state": state}],
                },
            }
        ]
    return obs


def test_a_lost_status_patch_neither_rewrites_the_configmaps_nor_resends_the_webhook(tmp_path, monkeypatch, hook):
    with Cluster(tmp_path / "cluster") as c:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        api = Api()
        run = {"apiVersion": A.API_VERSION, "kind": A.KIND, "metadata": {"name": "fin"}, "spec": SPEC}
        api.create_custom(A.GROUP, A.VERSION, A.PLURAL, NS, run)  # a real owner: its ConfigMaps stay
        body = api.custom.get_namespaced_custom_object(A.GROUP, A.VERSION, NS, A.PLURAL, "fin")
        body["metadata"]["generation"] = 1
        cases = plan(A.parse_spec(SPEC))

        def observe(api_, body_, config_, jobsets=False):
            obs = _ended(cases, "fin")
            obs.results = handlers.observe_results(api_, NS, body_)  # the real ConfigMap, observed
            return obs

        events: list[str] = []
        monkeypatch.setattr(handlers, "observe", observe)
        monkeypatch.setattr(kopf, "event", lambda body, type, reason, message: events.append(reason))
        writes = []
        apply = api.apply_configmap
        monkeypatch.setattr(api, "apply_configmap", lambda obj: (writes.append(obj["metadata"]["name"]), apply(obj)))
        config = handlers.Config()
        log = logging.getLogger("test")
        written: list[dict] = []
        lose = {"on": True}
        patch_status = api.patch_custom_status

        def lossy(*args):  # the operator writes the status through the API; here that write can be lost
            written.append(args[-1])
            return {} if lose["on"] else patch_status(*args)

        monkeypatch.setattr(api, "patch_custom_status", lossy)

        def tick(b):
            n = len(written)
            handlers.reconcile_run(copy.deepcopy(b), kopf.Patch(), log, config, api)
            return dict(written[-1]) if len(written) > n else {}

        first = tick(body)  # every case ended: results and report written, a final status
        assert writes == ["fin-report", "fin-results"]
        assert first["phase"] == "PartiallyFailed" and first["resultsConfigMap"] == "fin-results"
        assert "ResultsWritten" in events
        assert hook == []  # not before a status that records the results is written

        # that status write is lost: the run still shows its old status; the next tick observes the ConfigMap
        second = tick(body)
        assert writes == ["fin-report", "fin-results"]  # nothing rewritten
        assert second["resultsConfigMap"] == "fin-results" and second["phase"] == "PartiallyFailed"
        assert second["completedAt"] == first["completedAt"] and second["regressions"] == first["regressions"]
        assert hook == []

        # the status is written now; the webhook goes out on the next tick, once, recorded on the ConfigMap
        lose["on"] = False
        assert tick(body)["resultsConfigMap"] == "fin-results"
        assert hook == []
        assert tick(body) == {}
        assert len(hook) == 1 and "1 failed case" in json.dumps(hook[0])
        cm = api.read_configmap(NS, "fin-results")
        assert handlers.A_WEBHOOK in cm["metadata"]["annotations"]
        tick(body)
        assert len(hook) == 1
        # a restarted operator (fresh memory) reads the record and does not send it again
        config2 = handlers.Config()
        handlers.reconcile_run(copy.deepcopy(body), kopf.Patch(), log, config2, api)
        assert len(hook) == 1 and writes == ["fin-report", "fin-results"]


def test_a_namesake_configmap_of_another_owner_is_not_taken_for_the_results(tmp_path, monkeypatch):
    with Cluster(tmp_path / "cluster") as c:
        monkeypatch.setenv("KUBECONFIG", str(c.kubeconfig))
        api = Api()
        body = {"metadata": {"name": "fin", "namespace": NS, "uid": "uid-new"}}
        old = K.build_configmap(
            {"apiVersion": A.API_VERSION, "kind": A.KIND, "metadata": {"name": "fin", "uid": "uid-old"}},
            "fin-results",
            {"results.json": "{}"},
            namespace=NS,
        )
        api.create(old)
        assert handlers.observe_results(api, NS, body) is None


def test_releasing_a_finished_run_keeps_the_jobset_of_a_case_that_succeeded():
    """A multi-node case ends when its rank 0 Job completes; its JobSet is marked Completed only after every
    node's Job is. The release after the results are written must not take that moment for "never finished"
    and delete the JobSet (a clean-clone CI run caught it); one whose case failed or was cancelled still goes."""

    class Calls:
        client = None

        def __init__(self):
            self.deleted, self.released = [], []

        def remove_finalizer(self, kind, ns, name, finalizer):
            self.released.append(name)

        def delete_job(self, ns, name):
            self.deleted.append(name)

        delete_jobset = delete_job

    def obj(name, conditions=()):
        fin = [reconcile.RESULT_FINALIZER]
        return {"metadata": {"name": name, "finalizers": fin}, "status": {"conditions": list(conditions)}}

    running = ({"type": "StartupPolicyCompleted", "status": "True"},)
    jobsets = {
        "ok": obj("ok", running),
        "bad": obj("bad", running),
        "done": obj("done", [{"type": "Completed", "status": "True"}]),
    }
    jobs = {"ok-node-0": obj("ok-node-0", [{"type": "Complete", "status": "True"}]), "lone": obj("lone")}
    cases = [
        {"id": "a", "phase": "Succeeded", "job": "ok-node-0", "jobSet": "ok"},
        {"id": "b", "phase": "Failed", "job": "bad-node-0", "jobSet": "bad"},
        {"id": "c", "phase": "Succeeded", "job": "done-node-0", "jobSet": "done"},
        {"id": "d", "phase": "Cancelled", "job": "lone"},
    ]
    api = Calls()
    handlers.release_jobs(api, NS, "fin", jobs, jobsets, cases=cases)
    assert sorted(api.released) == ["bad", "done", "lone", "ok", "ok-node-0"]
    assert sorted(api.deleted) == ["bad", "lone"]
    # without the cases (an older caller), an unfinished JobSet is stopped as before
    api = Calls()
    handlers.release_jobs(api, NS, "fin", jobs, jobsets)
    assert sorted(api.deleted) == ["bad", "lone", "ok"]
