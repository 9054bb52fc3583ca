"""Restart: the operator is killed mid-run, a Job finishes while it is down, and a new operator converges:
no duplicate Jobs, the same cases and results as a run that was never interrupted."""

from __future__ import annotations

import json

from ophelpers import wait_for

RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: restart
spec:
  pools:
    - name: cpu-a
      nodeSelector: {trainbench.dev/test-pool: a}
      image: trainer:test
      maxConcurrent: 1
  matrix:
    models: [tiny-qwen3]
    types: [sft-full, rl-full]
    seqLens: [128]
  steps: 2
  warmupSteps: 1
"""


def job_creations(cluster) -> int:
    return sum(n for (plural, _, _), n in cluster.sim.create_requests.items() if plural == "jobs")


def test_restart_mid_run(cluster, kubectl, operator):
    operator.start()
    kubectl.apply(RUN)

    def jobs():
        return kubectl.get_json("jobs")["items"]

    first = wait_for(lambda: jobs(), 60, "the first Job", on_fail=operator.log)
    assert len(first) == 1  # maxConcurrent 1
    operator.kill()  # SIGKILL: no shutdown, no cleanup
    uid = first[0]["metadata"]["uid"]

    def first_complete():
        js = jobs()
        conds = [c["type"] for j in js for c in (j.get("status") or {}).get("conditions") or []]
        return "Complete" in conds

    wait_for(first_complete, 120, "the first Job to complete while the operator is down")
    assert len(jobs()) == 1  # nobody launched the second case meanwhile

    operator.start()
    status = wait_for(
        lambda: (s := kubectl.get_json("br", "restart").get("status") or {}).get("resultsConfigMap") and s,
        240,
        "the run to end after the restart",
        on_fail=operator.log,
    )
    final_jobs = jobs()
    assert len(final_jobs) == 2 and job_creations(cluster) == 2, [j["metadata"]["name"] for j in final_jobs]
    assert uid in {j["metadata"]["uid"] for j in final_jobs}  # the first Job was adopted, not recreated
    assert status["phase"] == "Succeeded" and status["succeeded"] == 2
    results = json.loads(kubectl.get_json("configmap", "restart-results")["data"]["results.json"])
    assert sorted(c["id"] for c in results["cases"]) == sorted(c["id"] for c in status["cases"])
    for case in results["cases"]:
        assert case["phase"] == "Succeeded" and case["metrics"]["tps"]["mean"] > 0
    # the restarted operator re-exports finished results on its /metrics too
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    assert text.count("trainbench_result_mfu_percent{") == 2

    # a graceful stop (what a Deployment rollout sends) ends the process promptly, with a run being watched
    operator.proc.terminate()
    assert operator.proc.wait(20) == 0, operator.log()  # a hang fails here (TimeoutExpired), not a slow machine
