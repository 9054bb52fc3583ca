"""The per-suite history document stays under the ConfigMap limit, newest runs first to stay."""

from __future__ import annotations

import json

from trainbench.operator import kube as K
from trainbench.operator.results import history as H


def _results(fx, i: int, extra_cases: int = 0) -> dict:
    failed = {("qwen3-0.6b", "rl-lora", "a6000"): ("OutOfMemory", "CUDA out of memory")}
    doc = fx.make_results(f"run-{i:04d}", fx.CURRENT, failures=failed, when=i * 3600)
    # a wide suite: many more cases of the same shape, different ids and seq lens
    template = next(c for c in doc["cases"] if c["phase"] == "Succeeded")
    for j in range(extra_cases):
        doc["cases"].append({**template, "id": f"{template['id']}-{j}", "seq_len": 1024 + j})
    return doc


def test_append_keeps_runs_in_order_and_replaces_a_rerun(fx):
    doc = None
    for i in range(3):
        doc = H.append(doc, _results(fx, i))
    assert [r["run"] for r in doc["runs"]] == ["run-0000", "run-0001", "run-0002"]
    doc = H.append(doc, _results(fx, 1))
    assert [r["run"] for r in doc["runs"]] == ["run-0000", "run-0002", "run-0001"]
    assert doc["suite"] == "nightly" and H.is_history(doc)
    run = doc["runs"][-1]
    ok = [c for c in run["cases"] if c["phase"] == "Succeeded"]
    assert ok and all(set(c["metrics"]) >= {"tps", "mfu", "step_time"} for c in ok)
    failed = [c for c in run["cases"] if c["phase"] == "Failed"]
    assert failed and all("metrics" not in c for c in failed)


def test_trimming_at_the_configmap_size_limit(fx):
    limit = 60_000
    doc = None
    sizes = []
    for i in range(40):
        doc = H.append(doc, _results(fx, i, extra_cases=20), limit_bytes=limit)
        sizes.append(H.stored_size(doc))
    assert max(sizes) <= limit
    runs = [r["run"] for r in doc["runs"]]
    assert runs[-1] == "run-0039" and "run-0000" not in runs  # the oldest went first
    assert runs == sorted(runs)
    # one more run would not fit: the document is full, not sparse
    one_run = H.stored_size({**doc, "runs": doc["runs"][-1:]}) - H.stored_size({**doc, "runs": []})
    assert H.stored_size(doc) + one_run > limit


def test_default_limit_is_under_one_mib_as_a_configmap_value(fx):
    doc = None
    big = _results(fx, 0, extra_cases=400)
    for i in range(30):
        doc = H.append(doc, {**big, "run": f"run-{i:04d}"})
    assert H.stored_size(doc) <= H.HISTORY_LIMIT_BYTES < K.CONFIGMAP_LIMIT_BYTES
    # as the ConfigMap the operator writes: the value is a string inside the object's JSON
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "trainbench-history-nightly"}}
    cm["data"] = {H.CONFIGMAP_KEY: H.dumps(doc)}
    assert len(json.dumps(cm).encode()) < K.CONFIGMAP_LIMIT_BYTES
    assert len(doc["runs"]) < 30


def test_a_single_run_too_big_keeps_its_first_cases_and_says_so(fx):
    doc = H.append(None, _results(fx, 0, extra_cases=300), limit_bytes=20_000)
    assert H.stored_size(doc) <= 20_000
    run = doc["runs"][0]
    assert run["truncated"] is True and 0 < len(run["cases"]) < 305


def test_max_runs(fx):
    doc = None
    for i in range(6):
        doc = H.append(doc, _results(fx, i), max_runs=4)
    assert [r["run"] for r in doc["runs"]] == ["run-0002", "run-0003", "run-0004", "run-0005"]


def test_series_for_a_case(fx, tmp_path):
    doc = None
    for i in range(5):
        doc = H.append(doc, _results(fx, i))
    path = H.save(doc, tmp_path / "history.json")
    assert H.load(path) == doc
    from trainbench.operator.results.keys import case_key

    case = next(c for c in _results(fx, 9)["cases"] if c["phase"] == "Succeeded")
    pts = H.series(doc, case_key(case), last=3)
    assert [p["run"] for p in pts] == ["run-0002", "run-0003", "run-0004"]
    assert H.series(None, case_key(case)) == []


def test_history_from_a_suites_results_documents(fx):
    docs = [_results(fx, i) for i in (3, 1, 2)]
    doc = H.from_results(docs)
    assert [r["run"] for r in doc["runs"]] == ["run-0001", "run-0002", "run-0003"]
    assert H.from_results([]) is None


def test_a_retried_finish_replaces_its_entry_by_uid(fx):
    """A finish retried after an operator kill appends the run again: the uid keys the entry, so it is there
    once; a deleted run's namesake (same name, another uid) is another run."""
    first = H.append(None, _results(fx, 0), uid="uid-a")
    again = H.append(first, _results(fx, 0), uid="uid-a")
    assert [(r["run"], r["uid"]) for r in again["runs"]] == [("run-0000", "uid-a")]
    namesake = H.append(again, _results(fx, 0), uid="uid-b")
    assert [r["uid"] for r in namesake["runs"]] == ["uid-a", "uid-b"]


def test_before_leaves_out_the_run_itself_and_runs_that_had_not_finished(fx):
    doc = None
    for i, uid in enumerate(("u0", "u1", "u2")):
        doc = H.append(doc, _results(fx, i), uid=uid)
    started = doc["runs"][2]["started_at"]
    kept = H.before(doc, started, run="run-0002", uid="u2")
    assert [r["run"] for r in kept["runs"]] == ["run-0000", "run-0001"]
    assert [r["run"] for r in H.before(doc, None, uid="u1")["runs"]] == ["run-0000", "run-0002"]


def test_garbage_is_said_never_raised():
    assert H.parse(None) == (None, None)
    for text, said in [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a trainbench history"),
        ('{"schema": "other"}', "not a trainbench history"),
        (json.dumps({"schema": H.HISTORY_SCHEMA, "runs": {"a": 1}}), "runs is not a list"),
        (json.dumps({"schema": H.HISTORY_SCHEMA, "runs": [{"cases": [1]}]}), "runs is not a list"),
    ]:
        doc, problem = H.parse(text)
        assert doc is None and said in problem, (text, problem)
    doc, problem = H.parse(json.dumps(H.empty("s")))
    assert problem is None and doc["runs"] == []
