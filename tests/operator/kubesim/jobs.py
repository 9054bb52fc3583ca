"""The Job controller: a Job's pods (Indexed: one per completion index), startTime, activeDeadlineSeconds, and the
Complete / Failed condition from its pods' phases. Suspended Jobs get no pods."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from .common import JOBS, PODS, free_port, now_iso


class JobController:
    def __init__(self, sim, kill: Callable[[dict, str], Awaitable[None]]):
        self.sim = sim
        self._kill = kill  # the kubelet's: stop a pod's container with a reason (past the deadline)

    async def sync(self, job: dict) -> None:
        await self._job(job)

    async def _job(self, job: dict) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        ended = [
            c
            for c in status.get("conditions") or []
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        ]
        if ended:
            await self._ttl(job, ended[0].get("lastTransitionTime"))
            return
        if meta.get("deletionTimestamp"):  # being deleted (held by a finalizer): no longer managed
            return
        if spec.get("suspend"):
            return
        ns = meta["namespace"]
        pods = [
            p
            for p in self.sim.live(PODS, ns)
            if any(o.get("uid") == meta["uid"] for o in p["metadata"].get("ownerReferences") or [])
        ]
        if not status.get("startTime"):
            await self.sim.patch(JOBS, ns, meta["name"], {"status": {"startTime": now_iso(), "active": 0}})
        want = int(spec.get("completions") or 1) if spec.get("completionMode") == "Indexed" else 1
        have = {(p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-completion-index", "0") for p in pods}
        missing = [i for i in range(want) if str(i) not in have]
        if missing:
            for index in missing:
                await self._create_pod(job, index)
            return
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        deadline = spec.get("activeDeadlineSeconds")
        started = status.get("startTime")
        if (
            deadline
            and started
            and time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() > deadline
        ):
            for p in pods:
                if (p.get("status") or {}).get("phase") in ("Pending", "Running"):
                    await self._kill(p, reason="DeadlineExceeded")
            await self._finish_job(job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
            return
        if all(ph == "Succeeded" for ph in phases) and len(phases) >= int(spec.get("completions") or 1):
            await self._finish_job(job, "Complete", None, None, succeeded=len(phases))
        elif any(ph == "Failed" for ph in phases):
            await self._finish_job(
                job, "Failed", "PodFailurePolicy", "Container trainer for pod failed with a non-zero exit code"
            )
        else:
            await self.sim.patch(
                JOBS, ns, meta["name"], {"status": {"active": sum(ph in ("Pending", "Running") for ph in phases)}}
            )

    async def _ttl(self, job: dict, ended_at: str | None) -> None:
        """The TTL-after-finished controller: `spec.ttlSecondsAfterFinished`, or a fault plan's `job_ttl` for
        every Job (a cluster policy); deleting a Job that a finalizer holds only marks it for deletion."""
        meta = job["metadata"]
        faults = getattr(self.sim, "faults", None)
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None and faults is not None:
            ttl = faults.job_ttl
        if ttl is None or meta.get("deletionTimestamp") or not ended_at:
            return
        age = time.time() - datetime.fromisoformat(ended_at.replace("Z", "+00:00")).timestamp()
        if age >= float(ttl):
            await self.sim.remove(JOBS, meta["namespace"], meta["name"])
            await self.sim.collect_garbage()
            if faults is not None:
                faults.injected["ttl-delete jobs"] += 1

    async def _finish_job(self, job, type_, reason, message, succeeded=0) -> None:
        t = now_iso()
        cond = {"type": type_, "status": "True", "lastProbeTime": t, "lastTransitionTime": t}
        if reason:
            cond.update(reason=reason, message=message)
        st = {"conditions": [cond], "active": 0}
        if type_ == "Complete":
            st.update(succeeded=succeeded, completionTime=t)
        else:
            st.update(failed=1)
        await self.sim.patch(JOBS, job["metadata"]["namespace"], job["metadata"]["name"], {"status": st})

    async def _create_pod(self, job: dict, index: int = 0) -> None:
        tmpl = copy.deepcopy(job["spec"]["template"])
        meta = tmpl.setdefault("metadata", {})
        name = f"{job['metadata']['name'][:57]}-{uuid.uuid4().hex[:5]}"
        labels = meta.setdefault("labels", {})
        labels.update({"job-name": job["metadata"]["name"], "controller-uid": job["metadata"]["uid"]})
        labels["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
        if job["spec"].get("completionMode") == "Indexed":
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(index)
            tmpl["spec"]["hostname"] = f"{job['metadata']['name']}-{index}"
        port = free_port()  # each pod its own metrics port (they all share 127.0.0.1 here)
        meta.setdefault("annotations", {})["trainbench.dev/metrics-port"] = str(port)
        for c in tmpl["spec"]["containers"]:
            for p in c.get("ports") or []:
                if p.get("name") == "metrics":
                    p["containerPort"] = port
            cmd = c.get("command") or []
            for i, arg in enumerate(cmd[:-1]):
                if arg == "--metrics-port":
                    cmd[i + 1] = str(port)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **meta,
                "name": name,
                "namespace": job["metadata"]["namespace"],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": tmpl["spec"],
            "status": {"phase": "Pending", "conditions": []},
        }
        await self.sim.put(PODS, pod)
