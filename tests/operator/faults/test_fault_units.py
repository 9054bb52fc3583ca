"""The pure parts of issue 19's fault handling: results checked on the way in, gauges that are not readings,
a case that ended stays ended (its Job deleted only once that is written), a vanished Job is JobDeleted,
launches taken back when their create failed, status sanitizing and its refused writes, ConfigMap trimming."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from trainbench.operator import api, collect
from trainbench.operator import kube as K
from trainbench.operator.controller import handlers, reconcile
from trainbench.operator.plan import plan
from trainbench.operator.results import document as R
from trainbench.trainer import contract as C

NOW = datetime(2026, 2, 7, 3, 0, tzinfo=timezone.utc)
RUN = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": "r", "namespace": "b", "uid": "u"}}
OK = {"status": "ok", "metrics": {"tps": {"mean": 10.0, "std": 1.0, "min": 9.0, "max": 11.0, "n": 3}}}


def _with(path: str, value):
    doc = copy.deepcopy(OK)
    *head, last = path.split(".")
    d = doc
    for key in head:
        d = d[key]
    d[last] = value
    return doc


@pytest.mark.parametrize(
    "result, why",
    [
        (_with("metrics.tps.mean", float("nan")), "non-finite"),
        (_with("metrics.tps.mean", float("inf")), "non-finite"),
        (_with("metrics.tps.mean", -3.0), "negative"),
        (_with("metrics.tps.mean", 1e308), "implausible"),
        (_with("metrics.tps.mean", True), "bool"),
        (_with("metrics.tps", True), "bool"),
        (_with("metrics.tps.mean", "12.5"), "str"),
        (_with("metrics.tps.n", 2.5), "n"),
        (_with("metrics", [1, 2]), "metrics is list"),
        (_with("environment", "H100"), "environment is str"),
        (_with("error", 3), "error is int"),
        ({}, "empty object"),
        ({"status": "ok", "metrics": {}}, "reports no metric"),
        ([1, 2], "list"),
    ],
)
def test_results_are_checked_on_the_way_in(result, why):
    assert why in (R.result_problem(result) or "")


def test_a_valid_result_passes():
    assert R.result_problem(OK) is None
    assert R.result_problem({"status": "failed", "error": {"reason": "OutOfMemory"}}) is None


def test_gauges_that_are_not_readings():
    text = f"{C.M_TPS} +Inf\n{C.M_STEP} NaN\n{C.M_MFU} -1\n{C.M_STEPS_TOTAL} +Inf\n"
    progress = collect.parse_metrics(text)  # +Inf on an int gauge raised OverflowError
    assert progress["tps"] is None and progress["step"] is None and progress["mfu"] is None
    assert progress["steps_total"] is None


def _spec():
    return api.parse_spec({"pools": [{"name": "h100", "maxConcurrent": 2}], "matrix": {"models": ["qwen3-0.6b"]}})


def _pod(term=None, waiting=None, unschedulable=False, created=NOW):
    state = {"terminated": term} if term else {"waiting": waiting} if waiting else {"running": {}}
    conds = []
    if unschedulable:
        t = (NOW - timedelta(hours=1)).isoformat()
        conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": t}]
    return {
        "metadata": {"name": "p", "creationTimestamp": created.isoformat()},
        "spec": {},
        "status": {"phase": "Pending", "conditions": conds, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


def _job(name, cond=None, deleting=False):
    job = {"metadata": {"name": name, "creationTimestamp": "2026-02-07T01:00:00Z"}, "spec": {}, "status": {}}
    if cond:
        job["status"] = {"conditions": [{"type": cond, "status": "True"}]}
    if deleting:
        job["metadata"]["deletionTimestamp"] = "2026-02-07T02:00:00Z"
    return job


def test_a_job_we_stop_is_deleted_only_once_the_status_says_the_case_ended():
    spec = _spec()
    cases = plan(spec)
    name = K.job_name("r", cases[0].id)
    obs = reconcile.Observed(jobs={name: _job(name)}, pods={name: [_pod(unschedulable=True)]})
    run = {**RUN, "status": {"cases": [{"id": cases[0].id, "phase": "Pending", "startedAt": "2026-02-07T01:00:00Z"}]}}
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="b")
    entry = out.status["cases"][0]
    assert entry["phase"] == "Failed" and entry["reason"] == "Unschedulable"
    assert out.delete_jobs == []  # not yet: the status that says so is not written
    run["status"] = out.status  # written
    out2 = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="b")
    assert out2.delete_jobs == [name] and out2.create == []
    run["status"] = out2.status
    out3 = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="b")  # the Job is gone
    assert out3.create == [] and out3.status["cases"][0]["reason"] == "Unschedulable"


def test_a_case_that_ended_stays_ended_whatever_its_job_says_now():
    spec = _spec()
    cases = plan(spec)
    name = K.job_name("r", cases[0].id)
    prev = {"id": cases[0].id, "phase": "Succeeded", "tps": 10.0, "finishedAt": "2026-02-07T02:00:00Z"}
    run = {**RUN, "status": {"cases": [prev]}}
    obs = reconcile.Observed(jobs={name: _job(name, deleting=True)}, pods={})  # going away, its pod gone
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="b")
    entry = out.status["cases"][0]
    assert entry["phase"] == "Succeeded" and entry["tps"] == 10.0 and out.create == [] and out.delete_jobs == []


def test_a_launched_case_whose_job_vanished_is_job_deleted_never_relaunched():
    spec = _spec()
    cases = plan(spec)
    run = {**RUN, "status": {"cases": [{"id": cases[0].id, "phase": "Running", "startedAt": "2026-02-07T01:00:00Z"}]}}
    out = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="b")
    entry = out.status["cases"][0]
    assert entry["phase"] == "Failed" and entry["reason"] == reconcile.JOB_DELETED and out.create == []
    # held by our finalizer, deleted while running and without pods: the same
    name = K.job_name("r", cases[0].id)
    obs = reconcile.Observed(jobs={name: _job(name, deleting=True)})
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="b")
    assert out.status["cases"][0]["reason"] == reconcile.JOB_DELETED
    # deleted while its pod ran to the end: the pod's result is collected (no Job controller finishes it)
    msg = json.dumps(OK)
    obs.pods[name] = [_pod({"exitCode": 0, "message": msg, "finishedAt": "2026-02-07T02:00:00Z"})]
    out = reconcile.reconcile(run, spec, cases, obs, now=NOW, namespace="b")
    assert out.status["cases"][0]["phase"] == "Succeeded" and out.status["cases"][0]["tps"] == 10.0


@pytest.mark.parametrize("message", ['{"status":"ok","metrics":{"tps":{"mean":NaN}}}', "{}", '{"metrics":[1]}'])
def test_an_invalid_result_is_metrics_unavailable_with_no_number(message):
    spec = _spec()
    cases = plan(spec)
    name = K.job_name("r", cases[0].id)
    pod = _pod({"exitCode": 0, "message": message, "finishedAt": "2026-02-07T02:00:00Z"})
    obs = reconcile.Observed(jobs={name: _job(name, "Complete")}, pods={name: [pod]})
    out = reconcile.reconcile(copy.deepcopy(RUN), spec, cases, obs, now=NOW, namespace="b")
    entry = out.status["cases"][0]
    assert entry["phase"] == "MetricsUnavailable" and "tps" not in entry
    outcome = reconcile.outcomes(cases, out.status, obs)[cases[0].id]
    assert outcome["result"] is None
    doc = R.build_results("r", "s", spec, cases, {cases[0].id: outcome}, None, None, {})
    assert doc["cases"][0]["phase"] == "MetricsUnavailable" and doc["cases"][0]["metrics"] is None


def test_launches_are_recorded_only_for_objects_that_exist():
    spec = _spec()
    cases = plan(spec)
    out = reconcile.reconcile(copy.deepcopy(RUN), spec, cases, reconcile.Observed(), now=NOW, namespace="b")
    assert set(out.launches) == {c.id for c in cases[:2]}
    job = out.launches[cases[0].id][-1]
    assert reconcile.RESULT_FINALIZER in job["metadata"]["finalizers"]
    reconcile.unlaunch(out.status, cases[0].id, "500 Internal Error")
    entry = out.status["cases"][0]
    assert entry["phase"] == "Pending" and "startedAt" not in entry and "500" in entry["message"]


def test_a_refused_create_ends_the_case_and_is_never_relaunched():
    spec = _spec()
    cases = plan(spec)
    run = copy.deepcopy(RUN)
    out = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="b")
    refused = {cases[0].id: "the API server refused Job j (422 Invalid): denied by policy p"}
    reconcile.refuse(out, run, spec, reconcile.Observed(), refused, NOW)
    entry = out.status["cases"][0]
    assert (entry["phase"], entry["reason"]) == ("Failed", reconcile.CREATE_REFUSED) and "policy p" in entry["message"]
    assert cases[0].id not in out.launches and out.status["failed"] == 1 and out.status["pending"] == len(cases) - 1
    cond = next(c for c in out.status["conditions"] if c["type"] == "CreateRefused")
    assert cond["status"] == "True" and "policy p" in cond["message"]
    assert ("Warning", "CreateRefused") in {(e[0], e[1]) for e in out.events}
    assert not any(e[1] == "CaseLaunched" and cases[0].id in e[2] for e in out.events)
    # the next tick: the case stays ended (its Job never existed), nothing launches it again
    run["status"] = out.status
    again = reconcile.reconcile(run, spec, cases, reconcile.Observed(), now=NOW, namespace="b")
    assert cases[0].id not in again.launches and again.status["cases"][0]["reason"] == reconcile.CREATE_REFUSED


@pytest.mark.parametrize(
    "code, message, refusal",
    [
        (422, "Job.batch is invalid", True),
        (400, "bad request", True),
        (403, 'admission webhook "x" denied the request', True),
        (403, "jobs.batch is forbidden: User cannot create resource", True),
        (404, "namespaces not found", True),
        (403, "exceeded quota: gpu", False),
        (409, "already exists", False),
        (429, "too many requests", False),
        (408, "timeout", False),
        (500, "internal error", False),
        (None, "timed out", False),
    ],
)
def test_what_is_a_refusal(code, message, refusal):
    assert reconcile.is_refusal(code, message) is refusal


def test_own_configmap_names():
    a, b = reconcile.own_configmap_name("r-results", "uid-1"), reconcile.own_configmap_name("r-results", "uid-2")
    assert a != b and a.startswith("r-results-") and len(a) == len("r-results") + 9
    long = reconcile.own_configmap_name("x" * 253, "uid-1")
    assert len(long) == 253


class _ApiException(Exception):
    def __init__(self, status, body="{}"):
        self.status, self.reason, self.body = status, "x", body


class _FakeApi:
    """Status writes answer from a script: an ApiException code, or None for success."""

    class client:
        ApiException = _ApiException

    def __init__(self, answers):
        self.answers, self.patches, self.reads = list(answers), [], 0

    def patch_custom_status(self, group, version, plural, ns, name, status):
        self.patches.append(status)
        code = self.answers.pop(0) if self.answers else None
        if code:
            raise _ApiException(code, json.dumps({"message": f"refused {code}"}))
        return {}

    def read_custom(self, group, version, plural, ns, name):
        self.reads += 1
        return {"metadata": {"name": name, "uid": "u"}, "status": {"phase": "Running"}}


def test_status_writes_retry_conflicts_from_a_fresh_read_and_record_refusals():
    log = logging.getLogger("test")
    body = {"metadata": {"name": "r", "namespace": "b", "uid": "u", "generation": 1}}
    new = {"phase": "Running", "cases": [{"id": "c", "tps": float("nan")}]}
    fake = _FakeApi([409, 500, None])
    assert handlers.write_status(fake, body, {}, new, log)
    assert fake.reads == 2 and fake.patches[-1]["cases"][0]["tps"] is None  # NaN sanitized
    fake = _FakeApi([422])
    assert not handlers.write_status(fake, body, {"conditions": []}, new, log)
    cond = fake.patches[-1]["conditions"][-1]
    assert cond["type"] == "StatusWriteRefused" and "refused 422" in cond["message"]


def test_a_results_document_of_480_failed_cases_fits_a_configmap():
    spec = api.parse_spec({"pools": [{"name": "h100"}], "matrix": {"models": ["qwen3-0.6b"]}})
    one = plan(spec)[0]
    cases = [dataclasses.replace(one, id=f"{one.id}-{i}", seq_len=1024 + 8 * i) for i in range(480)]
    tail = "Traceback (most recent call last):\n" + "  File x, line 1\n" * 120
    outs = {c.id: {"phase": "Failed", "reason": "Error", "message": tail[-2000:]} for c in cases}
    doc = R.build_results("r", "s", spec, cases, outs, None, None, {})
    assert len(json.dumps(doc, separators=(",", ":")).encode()) > K.CONFIGMAP_VALUE_LIMIT_BYTES
    text = R.configmap_text(doc)
    assert len(text.encode()) <= K.CONFIGMAP_VALUE_LIMIT_BYTES
    back = R.load_results(text)
    assert len(back["cases"]) == 480 and back[R.TRIM_NOTE_KEY]
    report = handlers.fit_report("# report\n" + "x" * (2 * K.CONFIGMAP_LIMIT_BYTES), back[R.TRIM_NOTE_KEY], "r")
    assert len(report.encode()) <= K.CONFIGMAP_VALUE_LIMIT_BYTES and "cut here" in report
    assert "trimmed" in handlers.fit_report("# report\n", back[R.TRIM_NOTE_KEY], "r")
