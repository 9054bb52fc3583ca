"""Level-based reconciliation of one BenchmarkRun. Pure: observed state in, actions and status out.

Every tick the operator lists the run's Jobs and Pods, scrapes the running rank-0 pods and calls
`reconcile(...)`. Nothing depends on having seen an event: an operator that restarted, or missed a
watch event, computes the same answer from what is there. The status it returns is complete (not a
delta), and `events` are the transitions between the previous status and this one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import get_args

from trainbench.operator import collect
from trainbench.operator import kube as K
from trainbench.operator.api import BenchmarkRunSpec, RunPhase
from trainbench.operator.clock import iso
from trainbench.operator.controller import failures
from trainbench.operator.plan import Case
from trainbench.operator.results.document import result_problem
from trainbench.operator.results.verdict import regressions

JOB_DELETED = "JobDeleted"  # a case's Job (JobSet) was deleted before its result was collected
CREATE_REFUSED = "CreateRefused"  # the API server refused to create a case's Job/Service/JobSet (a 4xx)
RESULT_FINALIZER = "trainbench.dev/result"  # on a case's Job (JobSet) until the run's results are written
TERMINAL_CASE_PHASES = ("Succeeded", "Failed", "MetricsUnavailable", "Skipped", "Cancelled")
RUN_PHASES = get_args(RunPhase)  # declared once, with the CRD's status enum (api.py)
TERMINAL_RUN_PHASES = ("Succeeded", "PartiallyFailed", "Failed", "Cancelled")
CANCELLED_MESSAGE = "cancelled (spec.cancel)"
PROGRESS_FIELDS = {"state": "state", "step": "step", "steps_total": "stepsTotal", "tps": "tps", "mfu": "mfu"}
PROGRESS_FIELDS["step_time"] = "stepTime"


@dataclass
class Observed:
    """What the operator saw this tick (all keyed by Job name, or by case id for scrapes)."""

    jobs: dict[str, dict] = field(default_factory=dict)
    pods: dict[str, list[dict]] = field(default_factory=dict)  # rank 0 first
    logs: dict[str, str] = field(default_factory=dict)  # rank-0 log tail of ended pods that failed
    progress: dict[str, dict] = field(default_factory=dict)  # case id -> collect.parse_metrics dict
    results: dict | None = None  # the results document in the run's own results ConfigMap (None: not written)
    jobsets: dict[str, dict] = field(default_factory=dict)  # the run's JobSets by name (multiNode.engine JobSet)
    jobset_api: bool | None = None  # the cluster serves jobset.x-k8s.io/v1alpha2 jobsets (None: not known)
    nodes: list[dict] | None = None  # the cluster's nodes (None: not known, e.g. the operator may not list them)
    flavors: dict[str, str] = field(default_factory=dict)  # Job name -> Kueue ResourceFlavor(s) it was admitted on
    # hostile input (issue 19): why spec.queueName's Kueue LocalQueue cannot admit the run's Jobs (None: it exists,
    # or that is not known); said as condition QueueAvailable=False instead of waiting silently
    queue_missing: str | None = None
    # the names of the run's results and report ConfigMaps when its results are there ("results", "report"), and
    # ("foreign") why one is not the usual name: that name is held by an object this run does not own
    written: dict = field(default_factory=dict)


@dataclass
class Outcome:
    status: dict
    create: list[dict] = field(default_factory=list)  # objects to create (Jobs, Services, JobSets)
    delete_jobs: list[str] = field(default_factory=list)  # Jobs whose case is over but which still hold a slot
    delete_jobsets: list[str] = field(default_factory=list)  # the same for JobSets (their child Jobs go with them)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    # case id -> the objects that launch it (in `create`): the caller records the launch (startedAt, the
    # CaseLaunched event) only once they exist (created, or 409: already there), else `unlaunch`es the entry
    launches: dict[str, list[dict]] = field(default_factory=dict)
    all_ended: bool = False  # every case has ended: the results can be written
    write_results: bool = False  # every case has ended and the results ConfigMap is not there: write it
    write_partial: bool = False  # the run was just suspended with cases ended: write a report of what finished


def condition(prev: list[dict], type_: str, status: bool, reason: str, message: str, gen: int, now: str) -> dict:
    """A status condition; its lastTransitionTime moves only when its status changes."""
    old = next((c for c in prev if c.get("type") == type_), None)
    s = "True" if status else "False"
    changed = old is None or old.get("status") != s
    return {
        "type": type_,
        "status": s,
        "reason": reason,
        "message": message,
        "observedGeneration": gen,
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
    }


def invalid_status(prev_status: dict, generation: int, field_path: str, message: str, now: datetime) -> dict:
    """The status of a run whose spec cannot run: phase Failed, SpecValid=False naming the field."""
    t = iso(now)
    prev = prev_status.get("conditions") or []
    text = f"{field_path}: {message}" if field_path else message
    return {
        "phase": "Failed",
        "message": f"invalid spec: {text}",
        "observedGeneration": generation,
        "progress": "0/0",
        "total": 0,
        "done": 0,
        "succeeded": 0,
        "failed": 0,
        "running": 0,
        "pending": 0,
        "regressions": 0,
        "cases": [],
        "conditions": [
            condition(prev, "SpecValid", False, "InvalidSpec", text, generation, t),
            condition(prev, "Ready", False, "InvalidSpec", text, generation, t),
        ],
    }


def _case_entry(case: Case, job: str) -> dict:
    entry = {
        "id": case.id,
        "model": case.model,
        "type": case.type,
        "seqLen": case.seq_len,
        "pool": case.pool,
        "job": job,
    }
    if case.baseline:  # a run of the baseline's image beside confirming re-runs (plan.with_repeats)
        entry["baselineImage"] = case.image
    return entry


def reconcile(
    run: dict,
    spec: BenchmarkRunSpec,
    cases: list[Case],
    observed: Observed,
    *,
    now: datetime,
    namespace: str,
    suite: str | None = None,
    unschedulable_grace_s: float = failures.UNSCHEDULABLE_GRACE_S,
    image_pull_grace_s: float = failures.IMAGE_PULL_GRACE_S,
    pod_annotations: dict | None = None,
    pod_defaults: dict | None = None,
) -> Outcome:
    t = iso(now)
    prev_status = run.get("status") or {}
    prev_cases = {c.get("id"): c for c in prev_status.get("cases") or []}
    pools = {p.name: p for p in spec.pools}
    out = Outcome(status={})

    entries: list[dict] = []
    occupied: dict[str, int] = {name: 0 for name in pools}
    waiting: list[tuple[Case, dict]] = []
    run_name = run["metadata"]["name"]
    multi_node = spec.multi_node.engine
    for case in cases:
        name = K.case_job_name(run_name, case, multi_node)
        jobset_name = K.jobset_name(run_name, case.id) if K.engine(case, multi_node) == K.ENGINE_JOBSET else None
        prev = prev_cases.get(case.id) or {}
        entry = _case_entry(case, name)
        if jobset_name:
            entry["jobSet"] = jobset_name
        for key in ("startedAt", "finishedAt", "node", *PROGRESS_FIELDS.values()):
            if prev.get(key) is not None:
                entry[key] = prev[key]
        job = observed.jobs.get(name)
        jobset = observed.jobsets.get(jobset_name) if jobset_name else None
        if job is None:
            if prev.get("phase") in TERMINAL_CASE_PHASES:  # ended earlier and its Job was removed (e.g. stopped)
                entry.update({k: prev[k] for k in ("phase", "reason", "message") if prev.get(k) is not None})
            elif jobset is not None:  # the JobSet exists, its child Job not (yet): suspended, or just created
                v = failures.classify_jobset(jobset)
                entry.setdefault("startedAt", jobset["metadata"].get("creationTimestamp") or t)
                entry.update(phase=v.phase, message=v.message)
                if v.reason:
                    entry["reason"] = v.reason
                if v.terminal:
                    entry.setdefault("finishedAt", _finished_at(jobset, []) or t)
                else:
                    occupied[case.pool] = occupied.get(case.pool, 0) + 1
            elif prev.get("startedAt"):
                # launched (the status records a launch only once its Job existed) and now gone, though the
                # case had not ended: deleted before its result was collected (by hand, a TTL). Never relaunch.
                what = f"JobSet {jobset_name}" if jobset_name else f"Job {name}"
                entry.update(
                    phase="Failed",
                    reason=JOB_DELETED,
                    message=f"{what} was deleted before its result was collected (by hand, or a TTL); "
                    "the case is not launched again",
                )
                entry.setdefault("finishedAt", t)
            elif jobset_name and observed.jobset_api is False:
                entry.update(
                    phase="Failed",
                    reason="JobSetUnavailable",
                    message=f"spec.multiNode.engine is JobSet, but the cluster does not serve the JobSet API "
                    f"({K.JOBSET_API_VERSION} {K.JOBSET_PLURAL}): install JobSet, or use engine Job",
                )
                entry.setdefault("finishedAt", t)
            else:
                entry["phase"] = "Pending"
                waiting.append((case, entry))
            entries.append(entry)
            continue
        pods = observed.pods.get(name) or []
        v = failures.classify(
            job,
            pods,
            now=now,
            logs=observed.logs.get(name),
            unschedulable_grace_s=unschedulable_grace_s,
            image_pull_grace_s=image_pull_grace_s,
            nodes=observed.nodes,
        )
        if job["metadata"].get("deletionTimestamp") and not v.terminal:
            # deleted (by hand, a TTL) while our finalizer holds it: no Job controller finishes it any more, so
            # the rank-0 pod's own end decides; no pod left: nothing to collect
            rank0_end = failures.classify_pod(pods[0], observed.logs.get(name)) if pods else None
            if rank0_end is not None and rank0_end.terminal:
                v = rank0_end
            elif not pods:
                v = failures.CaseState(
                    "Failed",
                    JOB_DELETED,
                    f"Job {name} was deleted before its case ended; the case is not launched again",
                    terminal=True,
                )
        entry.setdefault("startedAt", job["metadata"].get("creationTimestamp") or t)
        if pods and (pods[0].get("spec") or {}).get("nodeName"):
            entry["node"] = pods[0]["spec"]["nodeName"]
        progress = observed.progress.get(case.id)
        if progress:
            for src, dst in PROGRESS_FIELDS.items():
                if progress.get(src) is not None:
                    entry[dst] = progress[src]
        if prev.get("phase") in TERMINAL_CASE_PHASES:
            # a case that ended stays ended, as the (freshly read) status recorded it: its Job may be going away
            # (deleted, its pods gone) and says less now. A Job the case no longer needs is deleted only now,
            # once the status that says the case ended has been written: a restart, a lost status write or a
            # stale read never relaunches a case whose Job we deleted
            entry.update({k: prev[k] for k in ("phase", "reason", "message") if prev.get(k) is not None})
            entry.setdefault("finishedAt", prev.get("finishedAt") or t)
            cancelled = prev.get("phase") == "Cancelled" and not v.terminal  # still running: stop it
            if (v.stop_job or cancelled) and not job["metadata"].get("deletionTimestamp"):
                if jobset_name:
                    out.delete_jobsets.append(jobset_name)
                else:
                    out.delete_jobs.append(name)
            entries.append(entry)
            continue
        if v.terminal:
            result, problem = checked_result(pods[0] if pods else None)
            phase, reason, message = v.phase, v.reason, v.message
            if phase == "MetricsUnavailable" and prev.get("step") is not None and prev.get("tps") is not None:
                # no final JSON, but the live scrapes saw the case measure: the last scrape stands in
                phase, reason, message = "Succeeded", None, "no result JSON; metrics from the last scrape"
            if problem and phase == "Succeeded":  # numbers that are not measurements never reach the table
                phase, reason, message = "MetricsUnavailable", "MetricsUnavailable", f"invalid result JSON: {problem}"
                for key in ("tps", "mfu", "stepTime"):
                    entry.pop(key, None)
            entry["phase"] = phase
            if reason:
                entry["reason"] = reason
            if message:
                entry["message"] = message[-1500:]
            metrics = (result or {}).get("metrics") or {}
            for key, dst in (("tps", "tps"), ("mfu", "mfu"), ("step_time", "stepTime")):
                mean = (metrics.get(key) or {}).get("mean") if isinstance(metrics.get(key), dict) else None
                if mean is not None:
                    entry[dst] = mean
            if result and result.get("status") != "failed":
                entry["state"] = "done"
            entry.setdefault("finishedAt", _finished_at(job, pods) or t)
            # v.stop_job: deleted on a later tick, once this status (the case ended) is written (above)
        else:
            entry["phase"] = v.phase
            if v.message:
                entry["message"] = v.message
            if v.reason:  # Pending/WaitingForCapacity
                entry["reason"] = v.reason
            occupied[case.pool] = occupied.get(case.pool, 0) + 1
        entries.append(entry)

    if spec.cancel:  # what has not ended is cancelled and its Job deleted (after this status is written)
        for entry in entries:
            before = (prev_cases.get(entry["id"]) or {}).get("phase")
            gone = entry.get("reason") == JOB_DELETED and before not in TERMINAL_CASE_PHASES  # our own delete
            if entry["phase"] in TERMINAL_CASE_PHASES and not gone:
                continue
            entry.update(phase="Cancelled", reason="Cancelled", message=CANCELLED_MESSAGE)
            entry.setdefault("finishedAt", t)
            job, jobset = observed.jobs.get(entry["job"]), observed.jobsets.get(entry.get("jobSet") or "")
            if jobset is not None and not jobset["metadata"].get("deletionTimestamp"):
                out.delete_jobsets.append(entry["jobSet"])
            elif job is not None and not job["metadata"].get("deletionTimestamp"):
                out.delete_jobs.append(entry["job"])
        waiting = []

    # launch what the pools have room for, in plan order
    if not spec.suspend:
        for case, entry in waiting:
            pool = pools[case.pool]
            if occupied[case.pool] >= pool.max_concurrent:
                continue
            engine = K.engine(case, multi_node)
            if engine == K.ENGINE_JOBSET and observed.jobset_api is not True:
                entry["message"] = f"waiting to learn whether the cluster serves {K.JOBSET_API_VERSION}"
                continue
            occupied[case.pool] += 1
            kwargs = dict(
                namespace=namespace,
                pod=case_pod_settings(spec, case, pool, pod_annotations, pod_defaults),
                queue_name=spec.queue_name,
                suite=suite,
            )
            if engine == K.ENGINE_JOBSET:
                obj = K.build_jobset(run, case, **kwargs)
                objs = [obj]
            else:
                obj = K.build_job(run, case, **kwargs)
                svc = K.build_service(run, case, namespace=namespace, suite=suite)
                objs = [o for o in (svc, obj) if o is not None]
            for o in objs:  # kept until the results are written: a TTL or a hand cannot take the result first
                fin = o["metadata"].setdefault("finalizers", [])
                if o is obj and RESULT_FINALIZER not in fin:
                    fin.append(RESULT_FINALIZER)
            out.create += objs
            out.launches[case.id] = objs
            what = f"{obj['kind']} {obj['metadata']['name']}"
            entry["startedAt"] = t
            entry["message"] = f"created {what}"
            out.events.append(("Normal", "CaseLaunched", f"case {case.id}: created {what} on pool {case.pool}"))

    _summarize(out, entries, run, spec, observed, now)
    return out


def refuse(out: Outcome, run: dict, spec: BenchmarkRunSpec, observed: Observed, refused: dict[str, str], now: datetime):
    """Cases whose objects the API server refused to create (a 4xx other than a conflict: `is_refusal`) end here:
    Failed with reason CreateRefused and the server's message, never launched again (a case that ended stays
    ended); the run's status is recounted, a CreateRefused condition names them, and their launch events become
    the transition events (a Warning CreateRefused per case). `refused`: case id -> what was refused and why."""
    t = iso(now)
    entries = out.status.get("cases") or []
    for entry in entries:
        if entry.get("id") in refused:
            entry.update(phase="Failed", reason=CREATE_REFUSED, message=refused[entry["id"]][:1500])
            entry["finishedAt"] = t
            for key in PROGRESS_FIELDS.values():
                entry.pop(key, None)
    names = {o["metadata"]["name"] for cid in refused for o in out.launches.get(cid, [])}
    out.launches = {cid: objs for cid, objs in out.launches.items() if cid not in refused}
    out.create = [o for o in out.create if o["metadata"]["name"] not in names]
    out.events = [
        ev for ev in out.events if ev[1] == "CaseLaunched" and not any(f"case {cid}:" in ev[2] for cid in refused)
    ]
    _summarize(out, entries, run, spec, observed, now)


def is_refusal(code: int | None, message: str = "") -> bool:
    """Whether an API error on a create says the object will never be accepted as it is (a 4xx: invalid,
    forbidden by RBAC or an admission policy, ...), not a passing condition: a conflict (409: it exists), too
    many requests (429), a request timeout (408) and an exceeded ResourceQuota (403 "exceeded quota": it waits
    for room) are retried."""
    if code is None or not 400 <= code < 500 or code in (408, 409, 429):
        return False
    return not (code == 403 and "exceeded quota" in message)


def _summarize(out: Outcome, entries: list[dict], run: dict, spec: BenchmarkRunSpec, observed: Observed, now):
    """The run's status from its case entries (counts, phase, conditions), set on `out` with the transition
    events and whether the results (or a partial report) are to be written now."""
    t = iso(now)
    generation = int(run["metadata"].get("generation") or 1)
    prev_status = run.get("status") or {}
    run_name = run["metadata"]["name"]
    counts = {p: 0 for p in ("Pending", "Running", "Succeeded", "Failed", "MetricsUnavailable", "Skipped", "Cancelled")}
    for e in entries:
        phase = e["phase"]
        if e.get("baselineImage") and phase in ("Failed", "MetricsUnavailable"):
            phase = "Skipped"  # the baseline's image could not run (gone): the confirmation falls back, no failure
        counts[phase] = counts.get(phase, 0) + 1
    total = len(entries)
    failed = counts["Failed"] + counts["MetricsUnavailable"]
    done = counts["Succeeded"] + failed + counts["Skipped"] + counts["Cancelled"]
    out.all_ended = done == total
    launched = any(e.get("startedAt") for e in entries)
    if out.all_ended and counts["Cancelled"]:
        phase = "Cancelled"
    elif out.all_ended:
        phase = "Succeeded" if failed == 0 else ("Failed" if counts["Succeeded"] == 0 else "PartiallyFailed")
    elif spec.suspend and counts["Running"] == 0:
        phase = "Suspended"
    elif launched:
        phase = "Running"
    else:
        phase = "Pending"
    prev_conditions = prev_status.get("conditions") or []
    metrics_unavailable = [e["id"] for e in entries if e["phase"] == "MetricsUnavailable"]
    ready = out.all_ended and observed.results is not None  # observed, not read back from the status
    conditions = [
        condition(
            prev_conditions,
            "Ready",
            ready,
            "ResultsWritten" if ready else phase,
            "results and report are written" if ready else "the results are written when every case has ended",
            generation,
            t,
        ),
        condition(prev_conditions, "SpecValid", True, "Planned", f"{total} cases planned", generation, t),
        condition(
            prev_conditions,
            "Completed",
            out.all_ended,
            phase if out.all_ended else "CasesRemaining",
            f"{done}/{total} cases ended, {failed} failed",
            generation,
            t,
        ),
        condition(
            prev_conditions,
            "MetricsUnavailable",
            bool(metrics_unavailable),
            "NoResult" if metrics_unavailable else "AllMeasured",
            ", ".join(metrics_unavailable) or "every ended case reported metrics",
            generation,
            t,
        ),
    ]
    refused = [e for e in entries if e.get("reason") == CREATE_REFUSED]
    if refused:  # objects the API server will not accept: said on the run, not retried (refuse)
        text = "; ".join(f"case {e['id']}: {(e.get('message') or '').splitlines()[0][:300]}" for e in refused)
        conditions.append(condition(prev_conditions, "CreateRefused", True, "Refused", text[:2000], generation, t))
    if spec.queue_name:  # a LocalQueue that does not exist never admits: say so (handlers.queue_problem)
        conditions.append(
            condition(
                prev_conditions,
                "QueueAvailable",
                observed.queue_missing is None,
                "QueueNotFound" if observed.queue_missing else "QueueFound",
                observed.queue_missing or f"Kueue LocalQueue {spec.queue_name} (or not checked)",
                generation,
                t,
            )
        )
    status = {
        "phase": phase,
        "message": f"{done}/{total} cases ended ({counts['Succeeded']} succeeded, {failed} failed), "
        f"{counts['Running']} running",
        "observedGeneration": generation,
        "progress": f"{done}/{total}",
        "total": total,
        "done": done,
        "succeeded": counts["Succeeded"],
        "failed": failed,
        "running": counts["Running"],
        "pending": counts["Pending"],
        "regressions": int(prev_status.get("regressions") or 0),
        "cases": entries,
        "conditions": conditions,
    }
    if prev_status.get("startedAt"):
        status["startedAt"] = prev_status["startedAt"]
    if launched and "startedAt" not in status:
        status["startedAt"] = min(e["startedAt"] for e in entries if e.get("startedAt"))
    rc = prev_status.get("conditions") or []
    for c in rc:  # keep conditions set by the results step (RegressionDetected, ...)
        if c.get("type") not in {x["type"] for x in conditions}:
            conditions.append(c)
    out.write_results = out.all_ended and observed.results is None
    out.write_partial = (
        phase == "Suspended" and prev_status.get("phase") != "Suspended" and done > 0 and observed.results is None
    )
    if out.all_ended and observed.results is not None:
        status = finished_status(prev_status, status, run_name, generation, observed.results, now, observed.written)
    out.status = status  # with write_results: final once the caller has written them (finished_status)
    out.events += transitions(prev_status, status)
    return out


def finished_status(
    prev_status: dict,
    status: dict,
    run_name: str,
    generation: int,
    results: dict,
    now: datetime,
    written: dict | None = None,
) -> dict:
    """The status of a run whose results ConfigMap exists (observed): where results and report are, when the
    run completed (the results' finished_at, so a status rebuilt on a later tick is the same), the number of
    regressions, Ready=True and RegressionDetected. `written` (Observed.written): the ConfigMaps' names when
    one is not the usual (held by an object the run does not own: condition ConfigMapNotOwned says so)."""
    t = iso(now)
    written = written or {}
    found = regressions(results)
    cm_results = written.get("results") or K.results_configmap_name(run_name)
    cm_report = written.get("report") or K.report_configmap_name(run_name)
    where = f"results in configmap/{cm_results}, report in configmap/{cm_report}"
    prev = prev_status.get("conditions") or []
    ready = condition(prev, "Ready", True, "ResultsWritten", where, generation, t)
    regressed = condition(
        prev,
        "RegressionDetected",
        bool(found),
        "Regressions" if found else "NoRegressions",
        "; ".join(f"{c['id']}: {v.get('metric')} {v.get('change_pct')}%" for c, v in found)[:1000]
        or ("no baseline" if not results.get("baseline") else "no metric worse than its threshold"),
        generation,
        t,
    )
    others = [
        c
        for c in status.get("conditions") or []
        if c["type"] not in ("Ready", "RegressionDetected", "BaselineUnavailable", "HistoryUnavailable")
        and c["type"] != "ConfigMapNotOwned"
    ]
    if written.get("foreign"):  # the usual names were taken: never overwritten, the run wrote its own
        text = "; ".join(written["foreign"])[:2000]
        others.append(condition(prev, "ConfigMapNotOwned", True, "NameTaken", text, generation, t))
    problem = (results.get("history") or {}).get("problem")  # a garbage <suite>-history (controller/suite.py)
    if problem:
        others.append(condition(prev, "HistoryUnavailable", True, "HistoryUnreadable", problem[:1000], generation, t))
    base = results.get("baseline") or {}
    if base.get("source") == "unavailable":  # a pinned baseline that is missing or garbage (results/baseline.py)
        others.append(
            condition(
                prev, "BaselineUnavailable", True, "BaselineUnavailable", base.get("description") or "", generation, t
            )
        )
    return {
        **status,
        "resultsConfigMap": cm_results,
        "reportConfigMap": cm_report,
        "completedAt": results.get("finished_at") or t,
        # cases with a Confirmed regression: the same count as the report's, the metrics' and the alerts'
        "regressions": int((results.get("summary") or {}).get("regressions") or len({c["id"] for c, _ in found})),
        "conditions": [ready, *others, regressed],
    }


def own_configmap_name(name: str, uid: str) -> str:
    """The name a run's ConfigMap `name` goes under when an object the run does not own holds `name`: `name`
    and a hash of the run's uid (at most 253 characters), a name no other run derives."""
    suffix = "-" + hashlib.sha256(uid.encode()).hexdigest()[:8]
    return name[: 253 - len(suffix)].rstrip("-.") + suffix


def checked_result(pod: dict | None) -> tuple[dict | None, str | None]:
    """The trainer's result JSON in a pod's termination message, checked on the way in
    (`results.document.result_problem`): (result, None), (None, why it is unusable), or (None, None) when the
    pod left no result JSON."""
    result = collect.parse_result(failures.termination_message(pod)) if pod else None
    if result is None:
        return None, None
    problem = result_problem(result)
    return (None, problem) if problem else (result, None)


def unlaunch(status: dict, case_id: str, why: str) -> None:
    """Take back the launch of a case whose objects could not be created (`Outcome.launches`): it stays
    Pending, with no startedAt, and is launched again on a later tick."""
    for entry in status.get("cases") or []:
        if entry.get("id") == case_id:
            entry.pop("startedAt", None)
            entry["phase"] = "Pending"
            entry["message"] = f"launch failed, retried: {why}"[:500]


def _finished_at(job: dict, pods: list[dict]) -> str | None:
    st = job.get("status") or {}
    if st.get("completionTime"):
        return st["completionTime"]
    for c in st.get("conditions") or []:
        if c.get("type") in ("Complete", "Completed", "Failed") and c.get("status") == "True":
            return c.get("lastTransitionTime")
    if pods:
        term = failures.terminated(pods[0]) or {}
        return term.get("finishedAt")
    return None


def transitions(prev: dict, new: dict) -> list[tuple[str, str, str]]:
    """Events for what changed between two statuses: each case's phase, and the run's phase."""
    events = []
    before = {c.get("id"): c for c in prev.get("cases") or []}
    for c in new.get("cases") or []:
        old = before.get(c["id"]) or {}
        if old.get("phase") == c["phase"]:
            continue
        if c["phase"] == "Running":
            events.append(("Normal", "CaseRunning", f"case {c['id']} is running on {c.get('node') or '?'}"))
        elif c["phase"] == "Succeeded" and old.get("phase") != "Succeeded":
            events.append(("Normal", "CaseSucceeded", f"case {c['id']} succeeded"))
        elif c["phase"] in ("Failed", "MetricsUnavailable") and old.get("phase") != c["phase"]:
            msg = (c.get("message") or "").splitlines()[0][:300] if c.get("message") else ""
            events.append(("Warning", c.get("reason") or c["phase"], f"case {c['id']} failed: {msg}"))
    if prev.get("phase") != new.get("phase"):
        kind = "Warning" if new["phase"] in ("Failed", "PartiallyFailed") else "Normal"
        events.append((kind, f"Run{new['phase']}", new.get("message") or new["phase"]))
    return events


def scrape_result(progress: dict) -> dict:
    """A minimal trainer result from the last scrape of a case that left no result JSON."""
    metrics = {}
    for key in ("tps", "mfu", "step_time"):
        value = progress.get(key)
        if value is not None:
            metrics[key] = {"mean": value, "std": None, "min": value, "max": value, "n": 1}
    return {"status": "ok", "error": None, "metrics": metrics, "source": "last-scrape"}


def case_pod_settings(spec, case: Case, pool, pod_annotations=None, pod_defaults=None) -> K.PodSettings:
    """What a case's pods get: the pool's settings, the pod templates (operator defaults < spec.podTemplate <
    the pool's) and the case model's weights (spec.weights)."""
    pod = K.PodSettings.for_pool(pool, pod_annotations, spec.pod_template, pod_defaults)
    weights = K.case_weights(spec.weights, case)
    if weights is None:
        return pod
    return replace(pod, weights_claim=weights[0], weights_path=weights[1])


def image_digest(pod: dict) -> tuple[str | None, str | None]:
    """(digest, pinned reference) of the image the trainer container ran, from the kubelet's imageID
    (`docker-pullable://repo@sha256:...`, `repo@sha256:...` or `sha256:...`)."""
    image_id = failures.container_status(pod).get("imageID") or ""
    image = next((c.get("image") for c in (pod.get("spec") or {}).get("containers") or []), None) or ""
    match = re.search(r"sha256:[0-9a-f]{64}", image_id)
    if not match:
        return None, None
    digest = match.group(0)
    repo = image_id.split("://", 1)[-1].split("@", 1)[0] if "@" in image_id else ""
    if not repo:  # the imageID names no repository: the pod's image without its tag or digest
        repo = image.split("@", 1)[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
    return digest, f"{repo}@{digest}" if repo else digest


def kueue_flavors(workloads: list[dict]) -> dict[str, str]:
    """Job name -> the ResourceFlavor(s) Kueue admitted its Workload on (status.admission.podSetAssignments[]
    .flavors, resource -> flavor), from the Workloads of the namespace (owned by the Job, or a JobSet's)."""
    out: dict[str, str] = {}
    for wl in workloads:
        assignments = ((wl.get("status") or {}).get("admission") or {}).get("podSetAssignments") or []
        names = sorted({f for a in assignments for f in (a.get("flavors") or {}).values() if f})
        for owner in (wl.get("metadata") or {}).get("ownerReferences") or []:
            if names and owner.get("kind") in ("Job", "JobSet"):
                out[owner["name"]] = ", ".join(names)
                if owner.get("kind") == "JobSet":  # the case's entry names the JobSet's child Job
                    out[K.jobset_job_name(owner["name"])] = ", ".join(names)
    return out


def run_environment(namespace: str, outs: dict[str, dict]) -> dict:
    """The run-level facts of a cluster run from its cases' outcomes: the commit and build date of the trainer
    image (its TRAINBENCH_IMAGE_* environment) and the image pinned by digest, when every case that reports one
    agrees (else the distinct values, comma-separated)."""
    env: dict = {"executor": "kubernetes", "namespace": namespace}

    def one(values) -> str | None:
        distinct = sorted({v for v in values if v})
        return ", ".join(distinct) or None

    trainer_envs = [((o.get("result") or {}).get("environment") or {}) for o in outs.values()]
    facts = {
        "commit": one(e.get("image_revision") for e in trainer_envs),
        "image_created": one(e.get("image_created") for e in trainer_envs),
        "image_digest": one((o.get("provenance") or {}).get("image_digest") for o in outs.values()),
        "image": one((o.get("provenance") or {}).get("image_pinned") or o.get("image") for o in outs.values()),
    }
    env.update({k: v for k, v in facts.items() if v})
    return env


def outcomes(
    cases: list[Case], status: dict, observed: Observed, *, run: str = "", spec: BenchmarkRunSpec | None = None
) -> dict[str, dict]:
    """case id -> the outcome `results.build_results` takes (trainer JSON from the termination message), with
    what ran: the image digest (the pod's imageID), the node labels Kueue's flavor added and a one-line repro."""
    by_id = {c.get("id"): c for c in status.get("cases") or []}
    out = {}
    for case in cases:
        entry = by_id.get(case.id) or {}
        name = entry.get("job") or K.job_name("", case.id)
        pods = observed.pods.get(name) or []
        pod = pods[0] if pods else {}
        result, _ = checked_result(pod or None)  # an invalid result is no result (the case is MetricsUnavailable)
        progress = {src: entry.get(dst) for src, dst in PROGRESS_FIELDS.items() if entry.get(dst) is not None}
        if result is None and entry.get("phase") == "Succeeded" and progress.get("tps") is not None:
            result = scrape_result(progress)  # no final JSON: the last scrape stands in (n=1, no spread)
        image = next((c.get("image") for c in (pod.get("spec") or {}).get("containers") or []), None)
        digest, pinned = image_digest(pod) if pod else (None, None)
        pool = next((p for p in spec.pools if p.name == case.pool), None) if spec is not None else None
        weights = K.weights_arg(case_pod_settings(spec, case, pool)) if pool is not None else None
        provenance = {"image_digest": digest, "image_pinned": pinned}
        selector = (pod.get("spec") or {}).get("nodeSelector") or {}
        extra = {k: v for k, v in selector.items() if pool is None or pool.node_selector.get(k) != v}
        if extra and spec is not None and spec.queue_name:  # what Kueue's admitted flavor added to the pod
            provenance["kueue_flavor_node_labels"] = extra
        if observed.flavors.get(name):
            provenance["kueue_flavor"] = observed.flavors[name]
        resource = pool.resource_name if pool is not None else "nvidia.com/gpu"
        repro = K.repro_command(case, run, pinned or image or case.image, weights, resource)
        out[case.id] = {
            "provenance": {k: v for k, v in provenance.items() if v},
            "repro": repro,
            "phase": entry.get("phase") or "Pending",
            "reason": entry.get("reason"),
            "message": entry.get("message") if entry.get("phase") != "Succeeded" else None,
            "result": result,
            "progress": progress or None,
            "node": entry.get("node"),
            "image": image or case.image,
            "job": name,
            "started_at": entry.get("startedAt"),
            "finished_at": entry.get("finishedAt"),
        }
    return out
