"""The scheduler: a pending pod goes to the first node whose labels match its nodeSelector and whose taints it
tolerates; no such node: PodScheduled=False, reason Unschedulable, with the message a real scheduler writes."""

from __future__ import annotations

from .common import PODS, now_iso


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

    def _node_for(self, pod: dict) -> dict | None:
        want = pod["spec"].get("nodeSelector") or {}
        tolerated = {t.get("key") for t in pod["spec"].get("tolerations") or []}
        for node in self.nodes:
            labels = node["metadata"].get("labels") or {}
            taints = (node.get("spec") or {}).get("taints") or []
            if all(labels.get(k) == v for k, v in want.items()) and all(t["key"] in tolerated for t in taints):
                return node
        return None
