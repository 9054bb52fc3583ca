"""A suite's own ConfigMaps through a real API client against the emulated cluster (controller/suite.py):
`<suite>-history` appended once per run uid and trimmed under the ConfigMap limit, a garbage or foreign one said
and never fatal, `<suite>-acks` entries recorded once."""

from __future__ import annotations

import json

import pytest

from trainbench.operator import kube as K
from trainbench.operator.controller import suite as S
from trainbench.operator.controller.client import Api
from trainbench.operator.results import history as H

NS = "default"


@pytest.fixture
def api(cluster):
    return Api(kubeconfig=str(cluster.kubeconfig))


def _run(name: str, uid: str) -> dict:
    return {"metadata": {"name": name, "namespace": NS, "uid": uid}}


def _history_cm(api, suite="nightly") -> dict:
    return api.read_configmap(NS, K.history_configmap_name(suite))


def test_history_appended_once_per_uid_and_owned_by_no_run(api, fx):
    first, second = fx.make_results("nightly-1", fx.CURRENT), fx.make_results("nightly-2", fx.CURRENT, when=3600)
    assert S.record_history(api, _run("nightly-1", "u1"), "nightly", first) is None
    assert S.record_history(api, _run("nightly-1", "u1"), "nightly", first) is None  # a retried finish
    assert S.record_history(api, _run("nightly-2", "u2"), "nightly", second) is None
    cm = _history_cm(api)
    assert not cm["metadata"].get("ownerReferences")  # deleting runs never deletes the history
    labels = cm["metadata"]["labels"]
    assert labels[K.L_COMPONENT] == "history" and labels[K.L_SUITE] == "nightly"
    doc = json.loads(cm["data"][H.CONFIGMAP_KEY])
    assert [(r["run"], r["uid"]) for r in doc["runs"]] == [("nightly-1", "u1"), ("nightly-2", "u2")]
    # what the next run is judged against: both, read from the ConfigMap
    found = S.suite_history(api, NS, "nightly", "nightly-3", "2099-01-01T00:00:00Z")
    assert found.source == "configmap/nightly-history" and found.problem is None and found.previous
    assert [r["run"] for r in found.doc["runs"]] == ["nightly-1", "nightly-2"]
    # the retried finish of nightly-2 does not judge nightly-2 against itself
    again = S.suite_history(api, NS, "nightly", "nightly-2", second["started_at"], uid="u2")
    assert [r["run"] for r in again.doc["runs"]] == ["nightly-1"]


def test_history_trimmed_oldest_first_under_the_configmap_limit(api, fx):
    """A stored history one run short of the limit: the next run's append drops the oldest runs to fit."""
    template = fx.make_results("nightly-0000", fx.CURRENT)
    wide = H.run_entry(template, uid="u")
    wide["cases"] = [{**wide["cases"][0], "id": f"case-{j:04d}", "seq_len": 1024 + j} for j in range(40)]
    runs, size = [], 0
    while True:  # grow the history until one more run would not fit in a ConfigMap
        entry = {**wide, "run": f"nightly-{len(runs):04d}", "uid": f"u{len(runs)}"}
        doc = {**H.empty("nightly"), "runs": [*runs, entry]}
        if H.stored_size(doc) > K.CONFIGMAP_VALUE_LIMIT_BYTES:
            break
        runs.append(entry)
        size = H.stored_size(doc)
    assert size > K.CONFIGMAP_VALUE_LIMIT_BYTES - 40_000  # about full
    seeded = {**H.empty("nightly"), "runs": runs}
    cm = {"metadata": {"name": "nightly-history", "namespace": NS, "labels": S.suite_labels("nightly", "history")}}
    assert api.create({"apiVersion": "v1", "kind": "ConfigMap", **cm, "data": {H.CONFIGMAP_KEY: H.dumps(seeded)}})
    newest = fx.make_results("nightly-new", fx.CURRENT, when=10**6)
    newest["cases"] = [{**newest["cases"][0], "id": f"case-{j:04d}", "seq_len": 1024 + j} for j in range(60)]
    assert S.record_history(api, _run("nightly-new", "u-new"), "nightly", newest) is None
    stored = _history_cm(api)
    assert len(json.dumps(stored).encode()) < K.CONFIGMAP_LIMIT_BYTES
    doc = json.loads(stored["data"][H.CONFIGMAP_KEY])
    names = [r["run"] for r in doc["runs"]]
    assert names[-1] == "nightly-new" and len(names) < len(runs) + 1
    assert names[:-1] == [r["run"] for r in runs[len(runs) + 1 - len(names) :]]  # the oldest went


def test_garbage_history_is_said_and_a_foreign_one_never_overwritten(api, fx):
    labels = S.suite_labels("nightly", "history")
    meta = {"name": "nightly-history", "namespace": NS, "labels": labels}
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"history.json": "{oops"}})
    found = S.suite_history(api, NS, "nightly", "nightly-1", None)
    assert found.source == "results ConfigMaps" and "history.json is not JSON" in found.problem
    # the finish writes it anew (it is ours: labelled), from the fallback history plus the run
    assert S.record_history(api, _run("nightly-1", "u1"), "nightly", fx.make_results("nightly-1", fx.CURRENT)) is None
    assert S.suite_history(api, NS, "nightly", "nightly-2", None).problem is None
    # somebody else's ConfigMap of that name: read around, never written
    other = {"name": "weekly-history", "namespace": NS}
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": other, "data": {"notes": "mine"}})
    found = S.suite_history(api, NS, "weekly", "weekly-1", None)
    assert "not a trainbench history" in found.problem
    why = S.record_history(api, _run("weekly-1", "w1"), "weekly", fx.make_results("weekly-1", fx.CURRENT))
    assert "not a trainbench history" in why
    assert api.read_configmap(NS, "weekly-history")["data"] == {"notes": "mine"}


def test_acks_recorded_once(api):
    accept = S.ack_entry("accept", "nightly-2", note="new attention kernel")
    added, acks = S.record_ack(api, NS, "nightly", [accept])
    assert added == [accept] and len(acks) == 1
    added, acks = S.record_ack(api, NS, "nightly", [S.ack_entry("accept", "nightly-2")])
    assert added == [] and len(acks) == 1
    ack = S.ack_entry("ack", "nightly-2", "c1", "tps")
    assert S.record_ack(api, NS, "nightly", [ack])[0] == [ack]
    assert [a.get("accept") or a["metric"] for a in S.suite_acks(api, NS, "nightly")] == [True, "tps"]
    cm = api.read_configmap(NS, "nightly-acks")
    cm_bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad-acks", "namespace": NS}}
    api.create({**cm_bad, "data": {"acks.json": '{"a": 1}'}})
    with pytest.raises(S.AcksError, match="not a JSON list"):
        S.record_ack(api, NS, "bad", [accept])
    assert cm["metadata"]["labels"][K.L_COMPONENT] == "acks"
