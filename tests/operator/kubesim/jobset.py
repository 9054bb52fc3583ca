"""The JobSet controller (jobset.x-k8s.io/v1alpha2), for what the tests use: no restarts, startup policy or
dependencies. Once a JobSet is not suspended: the headless Service and the child Job of each replicated Job,
labelled and with the pod subdomain as JobSet sets them; the child Jobs' outcome mirrored into the JobSet's
Completed / Failed condition."""

from __future__ import annotations

import copy

from .common import JOBS, JOBSET_LABEL, JOBSETS, SERVICES, now_iso


class JobSetController:
    def __init__(self, sim):
        self.sim = sim

    async def sync(self, js: dict) -> None:
        await self._jobset(js)

    async def _jobset(self, js: dict) -> None:
        """The JobSet controller, for what the tests use: no restarts, startup policy or dependencies."""
        meta, spec, status = js["metadata"], js["spec"], js.get("status") or {}
        if status.get("terminalState") or spec.get("suspend"):
            return  # finished; or suspended (JobSet would keep its Jobs suspended: here, none exist yet)
        ns, name = meta["namespace"], meta["name"]
        owner = {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "name": name,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        network = spec.get("network") or {}
        subdomain = network.get("subdomain") or name
        if network.get("enableDNSHostnames") and self.sim.find(SERVICES, ns, subdomain) is None:
            await self.sim.put(
                SERVICES,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": subdomain, "namespace": ns, "ownerReferences": [owner]},
                    "spec": {
                        "clusterIP": "None",
                        "selector": {f"{JOBSET_LABEL}jobset-name": name},
                        "publishNotReadyAddresses": network.get("publishNotReadyAddresses", True),
                    },
                },
            )
        children = {
            j["metadata"]["name"]: j
            for j in self.sim.live(JOBS, ns)
            if any(o.get("uid") == meta["uid"] for o in j["metadata"].get("ownerReferences") or [])
        }
        want = 0
        for rjob in spec.get("replicatedJobs") or []:
            replicas = int(rjob.get("replicas", 1))
            for index in range(replicas):
                want += 1
                job_name = f"{name}-{rjob['name']}-{index}"
                if job_name in children:
                    continue
                tmpl = copy.deepcopy(rjob["template"])
                marks = {
                    f"{JOBSET_LABEL}jobset-name": name,
                    f"{JOBSET_LABEL}jobset-uid": meta["uid"],
                    f"{JOBSET_LABEL}replicatedjob-name": rjob["name"],
                    f"{JOBSET_LABEL}replicatedjob-replicas": str(replicas),
                    f"{JOBSET_LABEL}job-index": str(index),
                    f"{JOBSET_LABEL}restart-attempt": "0",
                }
                jmeta = tmpl.get("metadata") or {}
                pod_meta = tmpl["spec"]["template"].setdefault("metadata", {})
                for m in (jmeta, pod_meta):
                    m["labels"] = {**(m.get("labels") or {}), **marks}
                    m["annotations"] = {**(m.get("annotations") or {}), **marks}
                if network.get("enableDNSHostnames"):
                    tmpl["spec"]["template"]["spec"]["subdomain"] = subdomain
                job = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {**jmeta, "name": job_name, "namespace": ns, "ownerReferences": [owner]},
                    "spec": tmpl["spec"],
                }
                await self.sim.put(JOBS, job)
        ended = {
            c["type"]
            for j in children.values()
            for c in (j.get("status") or {}).get("conditions") or []
            if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
        }
        done = sum(
            any(
                c.get("type") == "Complete" and c.get("status") == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
            for j in children.values()
        )
        if "Failed" in ended:
            state, reason, message = "Failed", "FailedJobs", "jobset failed due to one or more job failures"
        elif done >= want:
            state, reason, message = "Completed", "AllJobsCompleted", "jobset completed successfully"
        else:
            return
        t = now_iso()
        cond = {"type": state, "status": "True", "reason": reason, "message": message, "lastTransitionTime": t}
        await self.sim.patch(JOBSETS, ns, name, {"status": {"conditions": [cond], "terminalState": state}})
