"""The controllers a cluster runs beside its API server, one asyncio task polling every `period` seconds: the JobSet
controller (with `jobset=True` only), the Job controller, the scheduler and the kubelet."""

from __future__ import annotations

import asyncio
import copy
import sys
from pathlib import Path

from .common import JOBS, JOBSETS, NODES, PODS
from .jobs import JobController
from .jobset import JobSetController
from .kubelet import Kubelet
from .scheduler import Scheduler


class Controllers:
    def __init__(self, sim, nodes: list[dict], workdir: Path, period: float = 0.25):
        self.sim, self.nodes, self.workdir, self.period = sim, nodes, workdir, period
        self.kubelet = Kubelet(sim, workdir)
        self.scheduler = Scheduler(sim, nodes)
        self.jobs = JobController(sim, kill=self.kubelet._kill)
        self.jobsets = JobSetController(sim)
        self.max_running: dict[str, int] = {}  # pool -> most pods running at once (for maxConcurrent checks)

    @property
    def procs(self) -> dict[str, dict]:
        return self.kubelet.procs

    @property
    def rdzv_ports(self) -> dict[str, int]:
        return self.kubelet.rdzv_ports

    async def setup(self) -> None:
        for node in self.nodes:
            await self.sim.put(NODES, copy.deepcopy(node))

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as e:  # keep the cluster alive; a test sees the effect
                print(f"kubesim controllers: {e!r}", file=sys.stderr)
            await asyncio.sleep(self.period)

    async def step(self) -> None:
        if self.sim.jobset:
            for jobset in self.sim.live(JOBSETS):
                await self.jobsets.sync(jobset)
        for job in self.sim.live(JOBS):
            await self.jobs.sync(job)
        for pod in self.sim.live(PODS):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            if await self.scheduler.bind(pod):
                await self.kubelet.sync(pod)
        await self.kubelet.reap({p["metadata"]["uid"] for p in self.sim.live(PODS)})
        running: dict[str, int] = {}
        for pod in self.sim.live(PODS):
            if (pod.get("status") or {}).get("phase") == "Running":
                pool = (pod["metadata"].get("labels") or {}).get("trainbench.dev/pool", "")
                running[pool] = running.get(pool, 0) + 1
        for pool, n in running.items():
            self.max_running[pool] = max(self.max_running.get(pool, 0), n)

    async def shutdown(self) -> None:
        await self.kubelet.shutdown()
