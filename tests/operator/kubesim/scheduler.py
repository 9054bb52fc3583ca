"""The scheduler: a pending pod goes to the first node whose labels match its nodeSelector, whose taints it
tolerates and (for a node that declares status.allocatable) whose allocatable is not yet taken by the pods bound
to it and still running; no such node: PodScheduled=False, reason Unschedulable, with the message a real scheduler
writes (a busy node says "Insufficient <resource>")."""

from __future__ import annotations

from .common import PODS, now_iso, parse_quantity


class Scheduler:
    def __init__(self, sim, nodes: list[dict]):
        self.sim, self.nodes = sim, nodes

    async def bind(self, pod: dict) -> bool:
        """Whether the pod is on a node (True) or was handled this tick: bound now or left Unschedulable (False)."""
        meta, status = pod["metadata"], pod.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        if pod["spec"].get("nodeName"):
            return True
        node = self._node_for(pod)
        if node is None:
            if not any(c.get("reason") == "Unschedulable" for c in status.get("conditions") or []):
                n = len(self.nodes)
                msg = f"0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector."
                short = self._insufficient(pod)
                if short:
                    msg = f"0/{n} nodes are available: {short}."
                cond = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": msg,
                    "lastTransitionTime": now_iso(),
                }
                await self.sim.patch(PODS, ns, name, {"status": {"conditions": [cond]}})
            return False
        t = now_iso()
        await self.sim.patch(
            PODS,
            ns,
            name,
            {
                "spec": {"nodeName": node["metadata"]["name"]},
                "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": t}]},
            },
        )
        return False

    def _matching(self, pod: dict) -> list[dict]:
        want = pod["spec"].get("nodeSelector") or {}
        tolerated = {t.get("key") for t in pod["spec"].get("tolerations") or []}
        out = []
        for node in self.nodes:
            labels = node["metadata"].get("labels") or {}
            taints = (node.get("spec") or {}).get("taints") or []
            if all(labels.get(k) == v for k, v in want.items()) and all(t["key"] in tolerated for t in taints):
                out.append(node)
        return out

    @staticmethod
    def _requests(pod: dict) -> dict[str, float]:
        total: dict[str, float] = {}
        for c in pod["spec"].get("containers") or []:
            res = c.get("resources") or {}
            for name, value in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
                total[name] = total.get(name, 0.0) + float(parse_quantity(value) or 0)
        return total

    def _free(self, node: dict) -> dict[str, float] | None:
        """What a node that declares allocatable has left (running pods bound to it hold theirs); None: unlimited."""
        alloc = (node.get("status") or {}).get("allocatable")
        if not alloc:
            return None
        free = {k: float(parse_quantity(v) or 0) for k, v in alloc.items()}
        for p in self.sim.live(PODS):
            if p["spec"].get("nodeName") == node["metadata"]["name"] and (p.get("status") or {}).get("phase") not in (
                "Succeeded",
                "Failed",
            ):
                for k, v in self._requests(p).items():
                    free[k] = free.get(k, 0.0) - v
        return free

    def _fits(self, pod: dict, node: dict) -> bool:
        free = self._free(node)
        return free is None or all(free.get(k, 0.0) >= v for k, v in self._requests(pod).items() if k in free)

    def _insufficient(self, pod: dict) -> str | None:
        matching = self._matching(pod)
        short = set()
        for node in matching:
            free = self._free(node) or {}
            short |= {k for k, v in self._requests(pod).items() if k in free and free[k] < v}
        return ", ".join(f"{len(matching)} Insufficient {k}" for k in sorted(short)) or None

    def _node_for(self, pod: dict) -> dict | None:
        return next((n for n in self._matching(pod) if self._fits(pod, n)), None)
