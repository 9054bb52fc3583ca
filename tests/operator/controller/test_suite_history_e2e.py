"""The suite's history, accepts and change points with the real operator (kopf, `trainbench operator`) against the
emulated cluster: `<suite>-history` outlives the runs it was built from, a garbage one is said (condition, report
line) and replaced, `kubectl annotate br RUN trainbench.dev/accept-baseline=all` records an accept with an Event,
and the operator's change-point gauge shows a planted change until `trainbench baseline ack` acknowledges it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import urllib.request

import yaml
from ophelpers import run_ended, run_results, wait_for
from prometheus_client.parser import text_string_to_metric_families

from trainbench.operator.plan import plan
from trainbench.operator.results import history as H

SPEC = {
    "pools": [{"name": "cpu-a", "nodeSelector": {"trainbench.dev/test-pool": "a"}, "image": "trainer:test"}],
    "matrix": {"models": ["tiny-qwen3"], "seqLens": [128]},
    "steps": 2,
}
LABELS = {"app.kubernetes.io/component": "history", "app.kubernetes.io/name": "trainbench"}


def manifest(name: str, suite: str) -> str:
    doc = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": name}}
    return yaml.safe_dump({**doc, "spec": {**SPEC, "suite": suite}})


def configmap(name: str, data: dict, labels: dict) -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data}
    )


def planted_history(case_id: str) -> dict:
    """12 old runs of the case (only its id: no baseline matches them), TPS 1000 then 700 from cp-old-06 on."""
    rng = random.Random(3)
    values = [1000 + rng.gauss(0, 5) for _ in range(6)] + [700 + rng.gauss(0, 5) for _ in range(6)]
    runs = [
        {
            "run": f"cp-old-{i:02d}",
            "started_at": f"2026-11-{i + 1:02d}T02:00:00Z",
            "finished_at": f"2026-11-{i + 1:02d}T02:10:00Z",
            "commit": f"c{i:02d}",
            "cases": [{"id": case_id, "phase": "Succeeded", "metrics": {"tps": {"mean": v}}}],
        }
        for i, v in enumerate(values)
    ]
    return {**H.empty("cp"), "runs": runs}


def change_points(text: str) -> list[tuple[dict, float]]:
    families = text_string_to_metric_families(text)
    return [
        (s.labels, s.value) for f in families if f.name == "trainbench_change_points_unacknowledged" for s in f.samples
    ]


def test_history_configmap_accept_annotation_and_change_point_gauge(cluster, kubectl, operator):
    operator.env["TRAINBENCH_MAX_OTHER_CPU"] = "64"  # about history and acks, not the machine's load
    case_id = plan({**SPEC, "suite": "cp"})[0].id
    kubectl.apply(configmap("hs-history", {"history.json": "{garbage"}, {**LABELS, "trainbench.dev/suite": "hs"}))
    kubectl.apply(configmap("cp-history", {"history.json": H.dumps(planted_history(case_id))}, LABELS))
    operator.start()

    def ended(name):
        return run_ended(kubectl, operator, name, 180)

    def results(name):
        return run_results(kubectl, name)

    def history(suite):
        return json.loads(kubectl.get_json("configmap", f"{suite}-history")["data"]["history.json"])

    def metrics():
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        return urllib.request.urlopen(url, timeout=5).read().decode()

    kubectl.apply(manifest("hs-1", "hs"))
    kubectl.apply(manifest("cp-1", "cp"))

    # a garbage history: said (condition, report line), the run's results written all the same, the history anew
    first = ended("hs-1")
    conds = {c["type"]: c for c in first["conditions"]}
    assert conds["HistoryUnavailable"]["status"] == "True" and "not JSON" in conds["HistoryUnavailable"]["message"]
    assert first["phase"] == "Succeeded"
    report = kubectl.get_json("configmap", "hs-1-report")["data"]["report.md"]
    assert "**History:** :warning: configmap/hs-history: history.json is not JSON" in report
    uid = kubectl.get_json("br", "hs-1")["metadata"]["uid"]
    assert [(r["run"], r["uid"]) for r in history("hs")["runs"]] == [("hs-1", uid)]
    assert not kubectl.get_json("configmap", "hs-history")["metadata"].get("ownerReferences")

    # the planted change point: in the report and in the gauge (slowdown, first run after it: cp-old-06)
    ended("cp-1")
    assert results("cp-1")["history"] == {"source": "configmap/cp-history", "problem": None}
    points = results("cp-1")["change_points"]
    assert [(p["case"], p["metric"], p["run"]) for p in points] == [(case_id, "tps", "cp-old-06")]
    want = {"suite": "cp", "case": case_id, "metric": "tps", "direction": "worse", "run": "cp-old-06"}
    want |= {"model": "tiny-qwen3", "type": "sft-full", "pool": "cpu-a"}
    assert change_points(metrics()) == [(want, 1.0)]
    assert [r["run"] for r in history("cp")["runs"]][-1] == "cp-1"

    # the run the history came from is deleted (its results ConfigMap goes with it): the next run's baseline is
    # still that run, read from <suite>-history
    kubectl("delete", "br", "hs-1", "--wait=false")
    wait_for(
        lambda: kubectl("get", "configmap", "hs-1-results", check=False).returncode != 0, 60, "hs-1's results to go"
    )
    kubectl.apply(manifest("hs-2", "hs"))
    ended("hs-2")
    doc2 = results("hs-2")
    assert doc2["history"] == {"source": "configmap/hs-history", "problem": None}
    assert doc2["baseline"]["matched"] == 1 and doc2["cases"][0]["baseline"]["run"] == "hs-1"
    assert [r["run"] for r in history("hs")["runs"]] == ["hs-1", "hs-2"]
    assert "HistoryUnavailable" not in {c["type"] for c in kubectl.get_json("br", "hs-2")["status"]["conditions"]}

    # accept by annotation: recorded in <suite>-acks as `trainbench baseline accept` does, with an Event
    kubectl("annotate", "br", "hs-2", "trainbench.dev/accept-baseline=all")

    def acks():
        r = kubectl("get", "configmap", "hs-acks", "-o", "json", check=False)
        return json.loads(json.loads(r.stdout)["data"]["acks.json"]) if r.returncode == 0 else None

    recorded = wait_for(acks, 60, "the accept in configmap/hs-acks", on_fail=operator.log)
    assert [(a["run"], a["case"], a.get("accept")) for a in recorded] == [("hs-2", "*", True)]

    def reasons():
        items = kubectl.get_json("events")["items"]
        return {(e["reason"], e.get("message", "")) for e in items if e["involvedObject"].get("name") == "hs-2"}

    wait_for(lambda: any(r == "BaselineAccepted" for r, _ in reasons()), 30, "the BaselineAccepted Event")
    # a case the run does not have: a Warning Event, nothing recorded
    kubectl("annotate", "br", "hs-2", "trainbench.dev/ack-change-points=no-such-case/tps")
    wait_for(lambda: any(r == "AnnotationRefused" and "no-such-case" in m for r, m in reasons()), 30, "the refusal")
    assert len(acks()) == 1
    # an operator restart records nothing twice
    operator.stop()
    operator.start()
    wait_for(lambda: change_points(metrics()) == [(want, 1.0)], 60, "the gauge after the restart")
    assert len(acks()) == 1

    # the change point acknowledged with the CLI (its first run no longer exists as a BenchmarkRun): gauge gone
    cli = [sys.executable, "-m", "trainbench.cli", "baseline", "ack", "cp-old-06", "--suite", "cp", "--metric", "tps"]
    out = subprocess.run([*cli, "-n", "default"], env=kubectl.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: change_points(metrics()) == [], 60, "the acknowledged change point to leave the gauge")


def test_a_retried_finish_appends_the_run_once(cluster, kubectl, operator, fx):
    """An operator killed after it appended the run to the history but before the run's results ConfigMap was
    written finishes the run again on restart: the entry is keyed by the run's uid, so the run is in the history
    once, and it is not judged against itself."""
    operator.env["TRAINBENCH_MAX_OTHER_CPU"] = "64"
    operator.start()
    suspended = yaml.safe_load(manifest("rt-1", "rt"))
    suspended["spec"]["suspend"] = True  # held until the history below is in place
    kubectl.apply(yaml.safe_dump(suspended))
    uid = wait_for(lambda: kubectl.get_json("br", "rt-1")["metadata"].get("uid"), 30, "the run's uid")
    # what the killed finish left: the history with this run already appended (and an older run before it)
    older = fx.make_results("rt-0", fx.CURRENT)
    left = fx.make_results("rt-1", fx.CURRENT, when=3600)
    doc = {**H.append(H.append(None, older, uid="uid-0"), left, uid=uid), "suite": "rt"}
    labels = {**LABELS, "trainbench.dev/suite": "rt"}
    kubectl.apply(configmap("rt-history", {"history.json": H.dumps(doc)}, labels))
    kubectl("patch", "br", "rt-1", "--type", "merge", "-p", '{"spec": {"suspend": false}}')
    wait_for(
        lambda: (kubectl.get_json("br", "rt-1").get("status") or {}).get("resultsConfigMap"),
        180,
        "run rt-1 to end",
        on_fail=operator.log,
    )
    stored = json.loads(kubectl.get_json("configmap", "rt-history")["data"]["history.json"])
    assert [(r["run"], r["uid"]) for r in stored["runs"]] == [("rt-0", "uid-0"), ("rt-1", uid)]
    mine = stored["runs"][-1]["cases"][0]
    assert mine["model"] == "tiny-qwen3"  # the real finish replaced what the killed one left
    results = json.loads(kubectl.get_json("configmap", "rt-1-results")["data"]["results.json"])
    assert results["history"]["source"] == "configmap/rt-history"
    assert all(c.get("baseline") is None or c["baseline"]["run"] != "rt-1" for c in results["cases"])
