"""The operator under faults (issue 19): the real `trainbench operator` process against the emulated cluster with
a FaultPlan (tests/operator/kubesim/faults.py), and the three numbers that must stay 0: duplicate Jobs (a case's
Job created twice), lost results (a case whose trainer reported valid numbers that are not in results.json,
and not reported as JobDeleted either) and stuck runs (not finished with their results by their deadline).

What one campaign does, all from one seed (TRAINBENCH_FAULT_SEED / --fault-seed, default 19):
- N BenchmarkRuns (TRAINBENCH_FAULT_RUNS / --fault-runs; CI: 4, the full campaign: 10 with --timeout 1700), in batches that run
  side by side; each has 12 cases on three pools: 4 that run (stand-in trainers, kubesim's fake_trainer, with
  valid or malformed termination messages: NaN, Infinity, negative, 1e308, booleans, empty objects, strings
  and lists where numbers and objects belong, truncated JSON, a non-zero exit), 4 Unschedulable and 4
  ImagePullBackOff (the Jobs the operator deletes itself: where the duplicates came from), one of those refused
  by the API server (an admission policy's 422: CreateRefused);
- every second run has spec.confirm 1 and a pinned baseline far faster than any stand-in number, so each case
  that measured is Suspected and re-run as a Job of its own, under the same kills and faults;
- the operator SIGKILLed at random moments (and restarted) while the runs go on;
- API faults on the operator's requests: 409/500/400 on status writes, 500 and lost answers on Job creates,
  500 on lists, reads, deletes and ConfigMap writes, slow reads, hung requests (no answer: the operator's
  client-side timeout, TRAINBENCH_API_TIMEOUT, gives up), a 2 s watch lag on BenchmarkRuns;
- every finished Job deleted at once by a TTL controller (ttlSecondsAfterFinished 0), and Jobs deleted by
  hand, running or finished.
Every malformed result must end MetricsUnavailable (or Failed for the non-zero exit) with no number.

Each run's deadline is derived from its units (its cases and their worst-case confirming re-runs, in waves of
the pools' maxConcurrent) and the kills of its batch (`run_deadline`), not one fixed batch deadline.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from collections import Counter

import yaml
from kubesim import JOBS, Cluster, FaultPlan
from ophelpers import NODES, Kubectl, Operator

from trainbench.operator import api as A
from trainbench.operator import kube as K
from trainbench.operator.controller import reconcile
from trainbench.operator.plan import plan, with_repeats
from trainbench.operator.results import document as R

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
{tail}"""
PLAIN = "  baseline: {source: none}  # no verdicts: the stand-in numbers are random (no confirmation re-runs)\n"

BATCH = 4  # runs side by side
KILLS_PER_RUN = 3
# a run's deadline (run_deadline): RUN_BASE_S for its start and finish, CASE_WAVE_S for each wave of units a pool
# runs (maxConcurrent at a time: a launch, a stand-in trainer or a grace period of up to 2 s, the ticks that see it
# end, on a loaded 2-core machine), and KILL_S for each kill of the operator in its batch (restart, catching up)
RUN_BASE_S, CASE_WAVE_S, KILL_S = 60.0, 40.0, 20.0
# the operator's client-side timeout here (connect, read): a hung request costs 10 s; shorter, an emulated API
# server that is only slow on a loaded 2-core machine (4 s for a GET was seen) times out again and again
API_TIMEOUT = "2,10"
GOLDEN = "faults-golden"  # the pinned baseline of the confirm runs
CONFIRMED = f"  confirm: 1\n  baseline: {{source: configMap, configMap: {GOLDEN}}}\n"


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


def fault_plan(seed: int, refused: list[str] = ()) -> FaultPlan:
    """The campaign's faults; `refused`: Job names the API server refuses (an admission policy's 422)."""
    plan = FaultPlan(seed=seed)
    status = r"/benchmarkruns/[^/]+/status$"
    for job in refused:  # first: these names are always refused, whatever else would fire
        plan.add("error", r"/namespaces/[^/]+/jobs$", ("POST",), name=re.escape(job), status=422, message=REFUSAL % job)
    # every kind at least once, whatever the seed: the first matching requests get them
    plan.add("hang", r"/benchmarkruns/[^/]+$", ("GET",), times=1)  # no answer: the client's timeout gives up
    plan.add("hang", r"/namespaces/[^/]+/jobs$", ("POST",), times=1)
    plan.add("hang", status, ("PATCH",), times=1)
    plan.add("hang", r"/configmaps", ("GET",), times=1)
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
    plan.add("hang", r"/namespaces/[^/]+/(jobs|pods|configmaps)", ("GET", "POST", "PATCH"), p=0.003)
    plan.watch_lag = 2.0
    plan.job_ttl = 0.0

    def fake(pod: dict):
        job = (pod["metadata"].get("labels") or {}).get("job-name", "")
        _, message, code, seconds, _ = trainer_plan(seed, job)
        return message, code, seconds

    plan.fake_trainer = fake
    return plan


REFUSAL = (
    'jobs.batch "%s" is forbidden: ValidatingAdmissionPolicy "gpu-jobs" with binding "gpu-jobs" denied request: '
    "a trainer Job must name a node pool that exists"
)


def manifest(name: str, confirm: bool) -> str:
    return RUN.format(name=name, tail=CONFIRMED if confirm else PLAIN)


def units_of(name: str, spec_doc: dict, confirm: dict | None = None, baseline_images: dict | None = None) -> list:
    """The units (Jobs) of a run: its cases, then `confirm[case id]` re-runs of each, each followed by a run of
    the baseline's image where `baseline_images` names one (plan.with_repeats, as the operator calls it)."""
    spec = A.parse_spec(spec_doc)
    return with_repeats(plan(spec), spec.repeats, confirm=confirm, baseline_images=baseline_images)


def refused_job(name: str) -> str:
    """The Job of the run's first case on pool nowhere: the API server refuses it (fault_plan)."""
    spec_doc = yaml.safe_load(manifest(name, False))["spec"]
    return next(K.case_job_name(name, u) for u in units_of(name, spec_doc) if u.pool == "nowhere")


def run_deadline(name: str, confirm: bool, batch_kills: int) -> float:
    """Seconds a run may take: RUN_BASE_S, CASE_WAVE_S per wave of units of each pool (its cases and, with
    spec.confirm, the worst case: every case re-run, each re-run beside a run of the baseline's image;
    ceil(units / maxConcurrent)) and KILL_S per kill of the operator in its batch."""
    spec_doc = yaml.safe_load(manifest(name, confirm))["spec"]
    cases = units_of(name, spec_doc)
    n = int(spec_doc.get("confirm") or 0)
    units = units_of(name, spec_doc, {c.id: n for c in cases}, {c.id: "baseline" for c in cases} if n else None)
    waves = 0
    for pool in spec_doc["pools"]:
        n = sum(1 for u in units if u.pool == pool["name"])
        waves += math.ceil(n / pool["maxConcurrent"])
    return RUN_BASE_S + waves * CASE_WAVE_S + batch_kills * KILL_S


def golden_configmap() -> dict:
    """The confirm runs' pinned baseline: every case at 1e6 tokens/s, far above any stand-in number, so each case
    that measured is Suspected and re-run, alternating with runs of the baseline's image (trainer:golden)."""
    spec_doc = yaml.safe_load(manifest(GOLDEN, True))["spec"]
    spec = A.parse_spec(spec_doc)
    cases = plan(spec)
    # measured with another image: each re-run is followed by a run of that image (a unit of its own)
    outcome = {"phase": "Succeeded", "result": _valid(1e6), "node": "sim", "job": GOLDEN, "image": "trainer:golden"}
    outs = {c.id: outcome for c in cases}
    doc = R.build_results(GOLDEN, "faults", spec, cases, outs, "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z", {})
    data = {R.CONFIGMAP_KEY: json.dumps(doc)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": GOLDEN}, "data": data}


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


def _check_run(
    cluster: Cluster, kubectl: Kubectl, name: str, seed: int, tally: Counter, late: bool, confirm: bool
) -> list[str]:
    """What one run must show: finished by its deadline (`late`: it was not), each unit's Job created at most
    once, status and results.json agreeing, every valid number in results.json (in the case, or in its repeat
    entry for a confirming re-run), no number from a malformed result, the refused Job ended CreateRefused."""
    run = kubectl.get_json("br", name)
    status = run.get("status") or {}
    if not status.get("resultsConfigMap") or status.get("phase") not in ("Succeeded", "PartiallyFailed", "Failed"):
        tally["stuck"] += 1
        return [f"{name}: stuck in {status.get('phase')}: {status.get('message')}"]
    problems = []
    if late:
        tally["stuck"] += 1
        problems.append(f"{name}: finished after its deadline")
    cm = kubectl.get_json("configmap", status["resultsConfigMap"])
    results = json.loads(cm["data"]["results.json"])
    units = units_of(name, run["spec"], status.get("confirm"), status.get("confirmBaseline"))
    by_status = {c["id"]: c for c in status["cases"]}
    if confirm:
        tally["confirm_runs"] += 1
        tally["confirm_reruns"] += sum((status.get("confirm") or {}).values())
        if (results.get("baseline") or {}).get("source") in (None, "unavailable"):
            tally["baseline_lost"] += 1
            problems.append(f"{name}: the pinned baseline is missing from results: {results.get('baseline')}")
    refused = refused_job(name)
    for case in results["cases"]:
        mine = [u for u in units if u.base_id == case["id"]]
        entries = case.get("repeats") or [case]
        if len(entries) != len(mine):
            problems.append(f"{name}/{case['id']}: {len(entries)} runs in results, {len(mine)} units")
            continue
        for unit, entry in zip(mine, entries, strict=True):
            problems += _check_unit(cluster, name, seed, tally, unit, entry, by_status.get(unit.id) or {}, refused)
    return problems


def _check_unit(cluster, name, seed, tally, unit, entry, st, refused) -> list[str]:
    job = K.case_job_name(name, unit)
    created = cluster.sim.creations[("jobs", "default", job)]
    tally["units"] += 1
    tally["confirm_units"] += bool(unit.confirm)
    tally["baseline_image_units"] += bool(getattr(unit, "baseline", False))
    problems = []
    if created > 1:
        tally["duplicate_jobs"] += created - 1
        problems.append(f"{name}/{unit.id}: Job {job} created {created} times")
    if st.get("phase") != entry["phase"]:
        tally["status_disagrees"] += 1
        problems.append(f"{name}/{unit.id}: status {st.get('phase')} but results {entry['phase']}")
    tps = ((entry.get("metrics") or {}).get("tps") or {}).get("mean")
    phase, reason = entry["phase"], entry.get("reason")
    if job == refused:
        ok = (phase, reason) == ("Failed", reconcile.CREATE_REFUSED) and created == 0
        tally["create_refused"] += 1
    elif unit.pool == "nowhere":
        ok = (phase, reason) == ("Failed", "Unschedulable")
        tally["unschedulable"] += 1
    elif unit.pool == "noimage":
        ok = (phase, reason) == ("Failed", "ImagePullBackOff")
        tally["image_pull"] += 1
    else:
        kind, _, _, _, want = trainer_plan(seed, job)
        tally[f"trainer_{'valid' if kind == 'valid' else 'exit-1' if kind == 'exit-1' else 'malformed'}"] += 1
        if reason == "JobDeleted":
            tally["reported_job_deleted"] += 1
            ok = tps is None
        elif kind == "valid":
            ok = phase == "Succeeded" and tps == want
            if not ok:
                tally["lost_results"] += 1
        elif kind == "exit-1":
            ok = phase == "Failed" and tps is None
        else:
            ok = phase == "MetricsUnavailable" and tps is None
            if tps is not None:
                tally["fabricated_numbers"] += 1
    if not ok:
        problems.append(f"{name}/{unit.id}: {phase} {reason} tps={tps} ({entry.get('message')})")
    return problems


def campaign_size(config) -> tuple[int, int]:
    """(runs, seed): --fault-runs / TRAINBENCH_FAULT_RUNS (default 4), --fault-seed / TRAINBENCH_FAULT_SEED (19)."""
    runs = config.getoption("--fault-runs", default=None) or int(os.environ.get("TRAINBENCH_FAULT_RUNS", "4"))
    seed = config.getoption("--fault-seed", default=None)
    return runs, seed if seed is not None else int(os.environ.get("TRAINBENCH_FAULT_SEED", "19"))


def test_fault_campaign(request, tmp_path):
    runs, seed = campaign_size(request.config)
    rng = random.Random(seed)
    names = [f"faults-{i:02d}" for i in range(runs)]
    confirms = {name: i % 2 == 1 for i, name in enumerate(names)}  # every second run confirms its suspects
    faults = fault_plan(seed, refused=[refused_job(n) for n in names])
    tally: Counter = Counter()
    problems: list[str] = []
    with Cluster(tmp_path / "cluster", nodes=NODES, faults=faults) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)  # kubectl is never faulted (FaultPlan.spared): it is not under test
        kubectl.apply(json.dumps(golden_configmap()))
        operator = Operator(cluster.kubeconfig, tmp_path)
        operator.env.update(TRAINBENCH_API_TIMEOUT=API_TIMEOUT, TRAINBENCH_MAX_OTHER_CPU="64")
        operator.start()
        killer = Killer(operator, random.Random(seed + 1))
        killer.start()
        hand_deleted: set[str] = set()
        try:
            for b in range(0, runs, BATCH):
                batch = names[b : b + BATCH]
                kills = KILLS_PER_RUN * len(batch)
                deadlines, finished = {}, {}
                for name in batch:
                    kubectl.apply(manifest(name, confirms[name]))
                    deadlines[name] = time.monotonic() + run_deadline(name, confirms[name], kills)
                killer.budget += kills
                while len(finished) < len(batch) and time.monotonic() < max(deadlines.values()):
                    tally["hand_deletions"] += _hand_deletions(cluster, batch, rng, hand_deleted)
                    for i in kubectl.get_json("br")["items"]:
                        name = i["metadata"]["name"]
                        if (
                            name in deadlines
                            and name not in finished
                            and (i.get("status") or {}).get("resultsConfigMap")
                        ):
                            finished[name] = time.monotonic()
                    time.sleep(1.0)
                for name in batch:
                    late = name in finished and finished[name] > deadlines[name]
                    problems += _check_run(cluster, kubectl, name, seed, tally, late, confirms[name])
        finally:
            killer.stop.set()
            killer.join(30)
            faults.enabled = False
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

        deadline = time.monotonic() + 90  # the last runs' ticks release their Jobs
        while any(leftovers()) and time.monotonic() < deadline:
            time.sleep(1)
        left, held = leftovers()
        operator.stop()
    # a refused create is tried again only when the status saying so was not written (a kill, a failed write)
    tally["refused_create_attempts"] = sum(r.fired for r in faults.rules if r.status == 422 and r.name)
    summary = {
        "runs": runs,
        "seed": seed,
        **dict(sorted(tally.items())),
        "injected": dict(sorted(faults.summary().items())),
        "leftover_pods": len(left),
        "jobs_still_held": len(held),
    }
    print("FAULT CAMPAIGN", json.dumps(summary))
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    assert not problems, "\n".join(problems[:40]) + "\n" + json.dumps(summary) + "\n" + operator.log()[-4000:]
    assert tally["duplicate_jobs"] == 0 and tally["lost_results"] == 0 and tally["stuck"] == 0
    assert not left and not held, (left, held)
    assert killer.kills >= runs  # the operator was killed, again and again (fewer on a quiet, fast machine)
    assert tally["create_refused"] == runs and tally["confirm_units"] > 0  # refusals and re-runs happened
    hung = sum(n for k, n in faults.summary().items() if k.startswith("hang "))
    assert hung >= 4  # requests that never got an answer, and the runs finished anyway
