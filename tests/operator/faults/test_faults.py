"""The operator under faults (issue 19): the real `trainbench operator` process against the emulated cluster with
a FaultPlan (tests/operator/kubesim/faults.py), and the three numbers that must stay 0: duplicate Jobs (a case's
Job created twice), lost results (a case whose trainer reported valid numbers that are not in results.json,
and not reported as JobDeleted either) and stuck runs (not finished with their results in time).

What one campaign does, all from one seed (TRAINBENCH_FAULT_SEED / --fault-seed, default 19):
- N BenchmarkRuns (TRAINBENCH_FAULT_RUNS / --fault-runs; CI: 4, the full campaign: 10 with --timeout 1700), in batches that run
  side by side; each has 12 cases on three pools: 4 that run (stand-in trainers, kubesim's fake_trainer, with
  valid or malformed termination messages: NaN, Infinity, negative, 1e308, booleans, empty objects, strings
  and lists where numbers and objects belong, truncated JSON, a non-zero exit), 4 Unschedulable and 4
  ImagePullBackOff (the Jobs the operator deletes itself: where the duplicates came from);
- the operator SIGKILLed at random moments (and restarted) while the runs go on;
- API faults on the operator's requests: 409/500/400 on status writes, 500 and lost answers on Job creates,
  500 on lists, reads, deletes and ConfigMap writes, slow reads, a 2 s watch lag on BenchmarkRuns;
- every finished Job deleted at once by a TTL controller (ttlSecondsAfterFinished 0), and Jobs deleted by
  hand, running or finished.
Every malformed result must end MetricsUnavailable (or Failed for the non-zero exit) with no number.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter

from kubesim import JOBS, Cluster, FaultPlan
from ophelpers import NODES, Kubectl, Operator

RUN = """
apiVersion: trainbench.dev/v1alpha1
kind: BenchmarkRun
metadata:
  name: {name}
spec:
  pools:
    - name: a
      nodeSelector: {{trainbench.dev/test-pool: a}}
      image: trainer:test
      maxConcurrent: 2
    - name: nowhere
      nodeSelector: {{trainbench.dev/test-pool: z}}
      image: trainer:test
      maxConcurrent: 2
    - name: noimage
      nodeSelector: {{trainbench.dev/test-pool: b}}
      image: missing.example/trainer:test
      maxConcurrent: 2
  matrix:
    models: [tiny-qwen3]
    types: [sft-full, rl-full]
    seqLens: [128, 256]
  steps: 2
  warmupSteps: 1
  baseline: {{source: none}}  # no verdicts: the stand-in numbers are random (no confirmation reruns)
"""

BATCH = 4  # runs side by side
RUN_TIMEOUT_S = 300.0  # a batch not finished by then is stuck (its kills included)
KILLS_PER_RUN = 3


def _valid(tps: float) -> dict:
    summary = {"mean": tps, "std": 1.0, "min": tps - 1, "max": tps + 1, "n": 3}
    return {
        "schema": "trainbench.dev/result/v1",
        "status": "ok",
        "error": None,
        "metrics": {"tps": summary, "mfu": {**summary, "mean": 1.5}, "step_time": {**summary, "mean": 0.25}},
        "environment": {"hostname": "sim"},
    }


def _malformed(kind: str) -> str:
    ok = _valid(100.0)
    if kind == "nan":
        return '{"status": "ok", "metrics": {"tps": {"mean": NaN, "n": 3}}}'
    if kind == "inf":
        return '{"status": "ok", "metrics": {"tps": {"mean": Infinity, "n": 3}}}'
    if kind == "negative":
        ok["metrics"]["tps"]["mean"] = -5.0
    elif kind == "huge":
        ok["metrics"]["tps"]["mean"] = 1e308
    elif kind == "bool":
        ok["metrics"] = {"tps": True}
    elif kind == "bool-mean":
        ok["metrics"]["tps"]["mean"] = True
    elif kind == "empty":
        return "{}"
    elif kind == "string-mean":
        ok["metrics"]["tps"]["mean"] = "123.0"
    elif kind == "list-metrics":
        ok["metrics"] = [1, 2, 3]
    elif kind == "string-environment":
        ok["environment"] = "H100"
    elif kind == "truncated":
        return json.dumps(ok)[:50]
    elif kind == "not-json":
        return "the trainer printed this instead"
    return json.dumps(ok)


MALFORMED = (
    "nan", "inf", "negative", "huge", "bool", "bool-mean", "empty", "string-mean", "list-metrics",
    "string-environment", "truncated", "not-json",
)  # fmt: skip


def trainer_plan(seed: int, job: str) -> tuple[str, str, int, float, float | None]:
    """What the stand-in trainer of Job `job` does: (kind, message, exit code, seconds, tps when valid)."""
    rng = random.Random(f"{seed}:{job}")
    seconds = rng.uniform(0.3, 2.0)
    roll = rng.random()
    if roll < 0.5:
        tps = round(rng.uniform(50, 5000), 3)
        return "valid", json.dumps(_valid(tps)), 0, seconds, tps
    if roll < 0.6:
        return "exit-1", "Traceback: boom", 1, seconds, None
    kind = rng.choice(MALFORMED)
    return kind, _malformed(kind), 0, seconds, None


def fault_plan(seed: int) -> FaultPlan:
    plan = FaultPlan(seed=seed)
    status = r"/benchmarkruns/[^/]+/status$"
    # every kind at least once, whatever the seed: the first matching requests get them
    plan.add("error", status, ("PATCH",), status=400, times=1)  # refused (what a NaN gets from a real server)
    plan.add("error", status, ("PATCH",), status=409, times=2)
    plan.add("error", r"/configmaps", ("POST",), status=500, times=1)
    plan.add("error", r"/namespaces/[^/]+/pods$", ("GET",), status=500, times=1)
    plan.add("slow", r"/namespaces/[^/]+/jobs$", ("GET",), delay=2.0, times=2)
    # then at random
    plan.add("error", status, ("PATCH",), status=409, p=0.15)
    plan.add("error", status, ("PATCH",), status=500, p=0.05)
    plan.add("error", status, ("PATCH",), status=400, p=0.02)  # refused (what a NaN gets from a real server)
    plan.add("lost", r"/namespaces/[^/]+/jobs$", ("POST",), status=500, p=0.25)  # created, answered 500
    plan.add("error", r"/namespaces/[^/]+/jobs$", ("POST",), status=500, p=0.1)
    plan.add("error", r"/namespaces/[^/]+/(jobs|pods)$", ("GET",), status=500, p=0.05)
    plan.add("error", r"/configmaps", ("POST", "PATCH", "GET"), status=500, p=0.1)
    plan.add("error", r"/jobs/[^/]+$", ("DELETE", "PATCH", "GET"), status=500, p=0.1)
    plan.add("slow", r"/benchmarkruns/[^/]+$", ("GET",), delay=1.0, p=0.1)
    plan.add("slow", r"/namespaces/[^/]+/pods$", ("GET",), delay=0.5, p=0.1)
    plan.watch_lag = 2.0
    plan.job_ttl = 0.0

    def fake(pod: dict):
        job = (pod["metadata"].get("labels") or {}).get("job-name", "")
        _, message, code, seconds, _ = trainer_plan(seed, job)
        return message, code, seconds

    plan.fake_trainer = fake
    return plan


class Killer(threading.Thread):
    """SIGKILLs the operator at random moments (seeded) of its working life, `budget` times, starting it again
    after each kill (the start itself takes seconds on a busy machine: the moments count from its end)."""

    def __init__(self, operator: Operator, rng: random.Random):
        super().__init__(daemon=True)
        self.operator, self.rng = operator, rng
        self.kills = 0
        self.budget = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(1.0, 6.0)):
            if self.budget <= 0:
                continue
            self.operator.kill()
            self.kills += 1
            self.budget -= 1
            time.sleep(self.rng.uniform(0.0, 1.0))
            self.operator.start()


def _hand_deletions(cluster: Cluster, names: list[str], rng: random.Random, done: set) -> int:
    """Delete a Job of these runs by hand now and then (one that has a pod: running, or finished)."""
    jobs = [
        j
        for j in cluster.objects("batch", "v1", "jobs", "default")
        if j["metadata"]["labels"].get("trainbench.dev/run") in names
        and not j["metadata"].get("deletionTimestamp")
        and j["metadata"]["name"] not in done
    ]
    pods = {(p["metadata"].get("labels") or {}).get("job-name") for p in cluster.objects("", "v1", "pods", "default")}
    jobs = [j for j in jobs if j["metadata"]["name"] in pods]
    if not jobs or rng.random() > 0.3:
        return 0
    job = rng.choice(jobs)

    async def delete():
        await cluster.sim.remove(JOBS, "default", job["metadata"]["name"])
        await cluster.sim.collect_garbage()

    cluster.call(delete())
    done.add(job["metadata"]["name"])
    return 1


def _check_run(cluster: Cluster, kubectl: Kubectl, name: str, seed: int, tally: Counter) -> list[str]:
    problems = []
    run = kubectl.get_json("br", name)
    status = run.get("status") or {}
    if not status.get("resultsConfigMap") or status.get("phase") not in ("Succeeded", "PartiallyFailed", "Failed"):
        tally["stuck"] += 1
        return [f"{name}: stuck in {status.get('phase')}: {status.get('message')}"]
    cm = kubectl.get_json("configmap", f"{name}-results")
    results = json.loads(cm["data"]["results.json"])
    by_status = {c["id"]: c for c in status["cases"]}
    for case in results["cases"]:
        job = case["job"]
        created = cluster.sim.creations[("jobs", "default", job)]
        tally["cases"] += 1
        if created > 1:
            tally["duplicate_jobs"] += created - 1
            problems.append(f"{name}/{case['id']}: Job {job} created {created} times")
        st = by_status.get(case["id"]) or {}
        if st.get("phase") != case["phase"]:
            tally["status_disagrees"] += 1
            problems.append(f"{name}/{case['id']}: status {st.get('phase')} but results {case['phase']}")
        tps = ((case.get("metrics") or {}).get("tps") or {}).get("mean")
        if case["pool"] == "nowhere":
            ok = case["phase"] == "Failed" and case["reason"] == "Unschedulable"
            tally["unschedulable"] += 1
        elif case["pool"] == "noimage":
            ok = case["phase"] == "Failed" and case["reason"] == "ImagePullBackOff"
            tally["image_pull"] += 1
        else:
            kind, _, _, _, want = trainer_plan(seed, job)
            tally[f"trainer_{'valid' if kind == 'valid' else 'exit-1' if kind == 'exit-1' else 'malformed'}"] += 1
            if case["reason"] == "JobDeleted":
                tally["reported_job_deleted"] += 1
                ok = tps is None
            elif kind == "valid":
                ok = case["phase"] == "Succeeded" and tps == want
                if not ok:
                    tally["lost_results"] += 1
            elif kind == "exit-1":
                ok = case["phase"] == "Failed" and tps is None
            else:
                ok = case["phase"] == "MetricsUnavailable" and tps is None
                if tps is not None:
                    tally["fabricated_numbers"] += 1
        if not ok:
            problems.append(
                f"{name}/{case['id']}: {case['phase']} {case.get('reason')} tps={tps} ({case.get('message')})"
            )
    return problems


def campaign_size(config) -> tuple[int, int]:
    """(runs, seed): --fault-runs / TRAINBENCH_FAULT_RUNS (default 4), --fault-seed / TRAINBENCH_FAULT_SEED (19)."""
    runs = config.getoption("--fault-runs", default=None) or int(os.environ.get("TRAINBENCH_FAULT_RUNS", "4"))
    seed = config.getoption("--fault-seed", default=None)
    return runs, seed if seed is not None else int(os.environ.get("TRAINBENCH_FAULT_SEED", "19"))


def test_fault_campaign(request, tmp_path):
    runs, seed = campaign_size(request.config)
    rng = random.Random(seed)
    plan = fault_plan(seed)
    tally: Counter = Counter()
    problems: list[str] = []
    with Cluster(tmp_path / "cluster", nodes=NODES, faults=plan) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)
        operator = Operator(cluster.kubeconfig, tmp_path)
        operator.start()
        killer = Killer(operator, random.Random(seed + 1))
        killer.start()
        hand_deleted: set[str] = set()
        try:
            names = [f"faults-{i:02d}" for i in range(runs)]
            for b in range(0, runs, BATCH):
                batch = names[b : b + BATCH]
                for name in batch:
                    plan.enabled = False  # the test's own kubectl is not the operator under test
                    kubectl.apply(RUN.format(name=name))
                    plan.enabled = True
                killer.budget += KILLS_PER_RUN * len(batch)
                deadline = time.monotonic() + RUN_TIMEOUT_S
                while time.monotonic() < deadline:
                    tally["hand_deletions"] += _hand_deletions(cluster, batch, rng, hand_deleted)
                    plan.enabled = False
                    items = kubectl.get_json("br")["items"]
                    plan.enabled = True
                    finished = [
                        i
                        for i in items
                        if i["metadata"]["name"] in batch and (i.get("status") or {}).get("resultsConfigMap")
                    ]
                    if len(finished) == len(batch):
                        break
                    time.sleep(0.5)
                plan.enabled = False
                for name in batch:
                    problems += _check_run(cluster, kubectl, name, seed, tally)
                plan.enabled = True
        finally:
            killer.stop.set()
            killer.join(30)
            plan.enabled = False
        tally["kills"] = killer.kills

        # afterwards: nothing left behind (no pod still waiting for a node, no Job held by our finalizer)
        def leftovers():
            pods = [
                p["metadata"]["name"]
                for p in cluster.objects("", "v1", "pods", "default")
                if (p.get("status") or {}).get("phase") in ("Pending", "Running")
            ]
            jobs = cluster.objects("batch", "v1", "jobs", "default")
            return pods, [j["metadata"]["name"] for j in jobs if j["metadata"].get("finalizers")]

        deadline = time.monotonic() + 30
        while any(leftovers()) and time.monotonic() < deadline:
            time.sleep(1)
        left, held = leftovers()
        operator.stop()
    summary = {
        "runs": runs,
        "seed": seed,
        **dict(sorted(tally.items())),
        "injected": dict(sorted(plan.summary().items())),
        "leftover_pods": len(left),
        "jobs_still_held": len(held),
    }
    print("FAULT CAMPAIGN", json.dumps(summary))
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    assert not problems, "\n".join(problems[:40]) + "\n" + json.dumps(summary) + "\n" + operator.log()[-4000:]
    assert tally["duplicate_jobs"] == 0 and tally["lost_results"] == 0 and tally["stuck"] == 0
    assert not left and not held, (left, held)
    assert killer.kills >= runs  # the operator was killed, again and again (fewer on a quiet, fast machine)
