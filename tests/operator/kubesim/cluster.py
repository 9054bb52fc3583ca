"""The emulated cluster in a background thread: the API server and its controllers on 127.0.0.1:<free port>."""

from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path

import kmock
import yaml

from .apiserver import KubeSim
from .common import CRD_PATH
from .controllers import Controllers


class Cluster:
    """KubeSim + controllers served on 127.0.0.1:<free port> in a background thread; `kubeconfig` for clients."""

    def __init__(
        self,
        workdir: Path,
        nodes: list[dict] | None = None,
        crds: list[dict] | None = None,
        jobset: bool = False,
        faults=None,
    ):
        self.faults = faults  # a faults.FaultPlan (API errors, slow answers, watch lag, TTL, fake trainers)
        self.jobset = jobset  # serve the JobSet API (and run its controller)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.crds = crds if crds is not None else [yaml.safe_load(CRD_PATH.read_text())]
        self.nodes = nodes if nodes is not None else []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self.sim: KubeSim | None = None
        self.controllers: Controllers | None = None
        self._thread = threading.Thread(target=self._main, name="kubesim", daemon=True)

    def __enter__(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulated cluster did not start")
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "sim", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "sim", "user": {"token": "test"}}],
                    "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim", "namespace": "default"}}],
                    "current-context": "sim",
                }
            )
        )
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.sim = KubeSim(self.crds, jobset=self.jobset, faults=self.faults)
        async with self.sim, kmock.Server(self.sim) as server:
            self.port = server.port
            self.controllers = Controllers(self.sim, self.nodes, self.workdir)
            await self.controllers.setup()
            task = asyncio.create_task(self.controllers.run())
            self._ready.set()
            await self._stop.wait()
            task.cancel()
            await self.controllers.shutdown()

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the cluster's loop from a test thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def objects(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict]:
        res = kmock.resource(group, version, plural)

        async def get():
            return copy.deepcopy(self.sim.live(res, namespace))

        return self.call(get())
