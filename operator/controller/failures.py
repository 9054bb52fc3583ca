"""Classify a case's Job and Pods into a phase and a failure reason (contract.FAILURE_REASONS). Pure.

What Kubernetes reports (Job conditions, pod phase and reason, container states, scheduling conditions)
is mapped here; what the trainer's exit code means is `collect.classify_exit`, shared with the local
executor, so the same exit gives the same reason everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trainbench.operator import collect
from trainbench.operator.clock import parse_time
from trainbench.operator.kube import CONTAINER

IMAGE_PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
UNSCHEDULABLE_GRACE_S = 120.0  # a pod may wait this long for a node (autoscalers) before it is Unschedulable
IMAGE_PULL_GRACE_S = 300.0  # ImagePullBackOff retries; registries hiccup
WAITING_FOR_CAPACITY = "WaitingForCapacity"  # a Pending case's reason: it fits a node, every such node is busy
DEADLINE_MESSAGE = "the Job ran past its deadline (activeDeadlineSeconds: the case's timeoutSeconds)"


@dataclass(frozen=True)
class CaseState:
    """Where a case stands according to its Job and pods."""

    phase: str  # contract.CASE_PHASES
    reason: str | None = None  # contract.FAILURE_REASONS when the case failed
    message: str = ""
    terminal: bool = False  # the case has ended (no more changes expected)
    stop_job: bool = False  # the Job is still alive but the case is over (delete it to free the pool)


def _age(since: str | None, now: datetime) -> float:
    t = parse_time(since)
    if t is None:
        return 0.0
    return (now - t).total_seconds()


def job_condition(job: dict, type_: str) -> dict | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c
    return None


def classify_jobset(jobset: dict) -> CaseState:
    """A case's JobSet before (or without) its child Job: its own conditions and suspension say where it is.
    Once the child Job exists, `classify` of that Job and its pods decides (they carry the pods' reasons)."""
    failed = job_condition(jobset, "Failed")
    if failed is not None:
        msg = failed.get("message") or "the JobSet failed"
        return CaseState("Failed", "Error", f"JobSet failed ({failed.get('reason') or 'Failed'}): {msg}", terminal=True)
    if job_condition(jobset, "Completed") is not None:
        return CaseState("Succeeded", None, "", terminal=True)
    if (jobset.get("spec") or {}).get("suspend"):
        return CaseState("Pending", None, "the JobSet is suspended (waiting for Kueue to admit it)")
    return CaseState("Pending", None, "waiting for the JobSet's Job")


def container_status(pod: dict) -> dict:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return cs
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def terminated(pod: dict) -> dict | None:
    state = container_status(pod).get("state") or {}
    return state.get("terminated")


def termination_message(pod: dict) -> str | None:
    t = terminated(pod)
    return (t or {}).get("message")


def unschedulable(pod: dict) -> dict | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return c
    return None


def _failed_at(pod: dict) -> str:
    """When a pod's container ended with a non-zero exit code (ISO time sorts as text); pods that did not fail last."""
    t = terminated(pod) or {}
    if t.get("exitCode") in (0, None) and (pod.get("status") or {}).get("reason") != "Evicted":
        return "~"
    return t.get("finishedAt") or "~"


def classify_pod(pod: dict, logs: str | None = None) -> CaseState:
    """A finished (or stuck) pod -> CaseState. `logs`: the container's log (for the last lines)."""
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return CaseState("Failed", "Evicted", status.get("message") or "the pod was evicted", terminal=True)
    t = terminated(pod)
    if t is not None:
        message_text = t.get("message")
        result = collect.parse_result(message_text)
        # FallbackToLogsOnError puts the log tail in the message when the trainer wrote none
        failed_silently = result is None and t.get("exitCode") not in (0, None)
        tail_from = (logs or message_text) if failed_silently else logs
        if t.get("reason") == "DeadlineExceeded":  # the Job's deadline killed it: say so as the Job would
            tail = collect.log_tail(tail_from)
            msg = DEADLINE_MESSAGE + (f"; last log lines:\n{tail}" if tail else "")
            return CaseState("Failed", "Timeout", msg, terminal=True)
        oom = t.get("reason") == "OOMKilled"
        phase, reason, msg = collect.classify_exit(t.get("exitCode"), result, tail_from, oom_killed=oom)
        return CaseState(phase, reason, msg, terminal=True)
    return CaseState("Running" if status.get("phase") == "Running" else "Pending")


# --- can any node ever run the pod? (a busy cluster is not a broken one) -----------------------------------------

_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_SUFFIX |= {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "m": 1e-3}


def quantity(value) -> float | None:
    """A Kubernetes quantity (500m, 64Gi, 8, 1e3) as a number; None when it is not one."""
    text = str(value).strip() if value is not None else ""
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * _SUFFIX[suffix]
            except ValueError:
                return None
    try:
        return float(text)
    except ValueError:
        return None


def _tolerated(taint: dict, tolerations: list[dict]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True  # PreferNoSchedule only steers
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _term_matches(term: dict, labels: dict) -> bool:
    for e in term.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op, True)  # Gt/Lt: not judged here (never a false "cannot fit")
        if not ok:
            return False
    return True


def _affinity_ok(pod_spec: dict, labels: dict) -> bool:
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(_term_matches(t, labels) for t in terms)


def pod_requests(pod: dict) -> dict[str, float]:
    """What a pod requests, summed over its containers (a limit without a request counts as the request)."""
    total: dict[str, float] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        asked = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for name, value in asked.items():
            q = quantity(value)
            if q:
                total[name] = total.get(name, 0.0) + q
    return total


def never_fits(pod: dict, nodes: list[dict] | None) -> str | None:
    """Why no node of the cluster can ever run `pod` (its nodeSelector matches no node, its required node affinity
    or untolerated taints rule out the rest, a resource it requests is on no such node, or no such node has that
    much allocatable); None when some node could (it is only busy) or when the nodes are not known."""
    if not nodes:
        return None
    spec = pod.get("spec") or {}
    want = spec.get("nodeSelector") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(want.items()))
    cands = [n for n in nodes if all(((n["metadata"].get("labels") or {}).get(k) == v) for k, v in want.items())]
    if not cands:
        return f"no node of the {len(nodes)} in the cluster has the labels {shown} (the pool's nodeSelector)"
    cands = [n for n in cands if _affinity_ok(spec, n["metadata"].get("labels") or {})]
    if not cands:
        return "no node with the pool's labels matches the pod's required node affinity (podTemplate.affinity)"
    tolerations = spec.get("tolerations") or []
    fitting = [n for n in cands if all(_tolerated(t, tolerations) for t in (n.get("spec") or {}).get("taints") or [])]
    if not fitting:
        taints = sorted(
            {f"{t.get('key')}:{t.get('effect')}" for n in cands for t in (n.get("spec") or {}).get("taints") or []}
        )
        return f"every matching node has a taint the pool does not tolerate ({', '.join(taints)}; spec.pools[].tolerations)"
    known = [n for n in fitting if (n.get("status") or {}).get("allocatable")]
    if not known:
        return None  # nodes that report no allocatable resources: cannot judge
    asked = pod_requests(pod)
    for name, amount in sorted(asked.items()):
        offers = [quantity(((n.get("status") or {}).get("allocatable") or {}).get(name)) or 0.0 for n in known]
        if max(offers) <= 0:
            return f"no matching node offers {name} (the pool's resourceName, or a podTemplate resource)"
        if max(offers) < amount:
            return f"the pod requests {name} {amount:g}, more than any matching node has allocatable ({max(offers):g})"

    def fits(n: dict) -> bool:
        alloc = (n.get("status") or {}).get("allocatable") or {}
        return all((quantity(alloc.get(k)) or 0.0) >= v for k, v in asked.items())

    if not any(fits(n) for n in known):
        return f"no single matching node has allocatable for all of {', '.join(sorted(asked))} at once"
    return None


def classify(
    job: dict,
    pods: list[dict],
    *,
    now: datetime,
    logs: str | None = None,
    unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S,
    image_pull_grace_s: float = IMAGE_PULL_GRACE_S,
    nodes: list[dict] | None = None,
) -> CaseState:
    """A case's Job and its pods (rank 0 first) -> CaseState."""
    rank0 = pods[0] if pods else None
    if job_condition(job, "Complete"):
        if rank0 is not None:
            v = classify_pod(rank0, logs)
            if v.terminal:
                return v
        return CaseState("Succeeded", None, "", terminal=True)
    failed = job_condition(job, "Failed")
    if failed:
        if failed.get("reason") == "DeadlineExceeded":
            msg = failed.get("message") or DEADLINE_MESSAGE
            tail = collect.log_tail(logs)
            return CaseState("Failed", "Timeout", msg + (f"; last log lines:\n{tail}" if tail else ""), terminal=True)
        # several pods (multi-node): the case fails with the reason of the pod that failed first; the
        # others usually fail because their peer went away
        for pod in sorted(pods, key=_failed_at):
            v = classify_pod(pod, logs if pod is rank0 else None)
            if v.terminal and v.phase != "Succeeded":
                return v
        msg = failed.get("message") or failed.get("reason") or "the Job failed"
        return CaseState("Failed", "Error", msg, terminal=True)
    if (job.get("spec") or {}).get("suspend"):
        return CaseState("Pending", None, "the Job is suspended (waiting for Kueue to admit it)")
    if rank0 is None:
        return CaseState("Pending", None, "waiting for the Job's pod")
    # the Job is alive: look for pods that will never run
    for pod in pods:
        cond = unschedulable(pod)
        if cond is not None:
            never = never_fits(pod, nodes)
            if never:  # no node can ever run it: fail now, with the reason (and the scheduler's own words)
                said = f"; the scheduler says: {cond['message']}" if cond.get("message") else ""
                return CaseState("Failed", "Unschedulable", never + said, terminal=True, stop_job=True)
            if nodes:  # some node could: the cluster is busy; wait (the Job's deadline is the case's timeout)
                msg = f"waiting for capacity: {cond.get('message') or 'every fitting node is busy'}"
                return CaseState("Pending", WAITING_FOR_CAPACITY, msg)
            # the nodes are not known (the operator may not list them): the grace period decides
            age = _age(cond.get("lastTransitionTime") or pod["metadata"].get("creationTimestamp"), now)
            if age >= unschedulable_grace_s:
                msg = cond.get("message") or "no node matches the pod's requirements"
                return CaseState("Failed", "Unschedulable", msg, terminal=True, stop_job=True)
            return CaseState("Pending", None, f"waiting for a node: {cond.get('message') or 'unschedulable'}")
        waiting = (container_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            age = _age(pod["metadata"].get("creationTimestamp"), now)
            msg = f"{waiting['reason']}: {waiting.get('message') or 'cannot pull the image'}"
            if age >= image_pull_grace_s or waiting["reason"] == "InvalidImageName":
                return CaseState("Failed", "ImagePullBackOff", msg, terminal=True, stop_job=True)
            return CaseState("Pending", None, msg)
    v = classify_pod(rank0, logs)
    if v.terminal and v.phase == "Succeeded":
        return CaseState("Running", None, "rank 0 finished; waiting for the Job to complete")
    return v
