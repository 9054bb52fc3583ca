"""Prometheus exporter of bench mode (rank 0). Metric and label names come from `contract.py`.

Its own `CollectorRegistry` (no process/platform collectors, no global state), one series per metric with the
labels of `contract.LABELS`, a state enum moving starting -> warmup -> measuring -> done | failed, and an info
metric with what ran (attention backend, AC mode, implementation, sequence length, world size).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Enum, Gauge, Info, start_http_server

from trainbench.trainer import contract as c


class Exporter:
    def __init__(self, labels: dict[str, str]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.labels = {k: str(labels.get(k, "")) for k in c.LABELS}
        names = list(c.LABELS)
        r = self.registry

        def g(name, doc):
            return Gauge(name, doc, names, registry=r).labels(**self.labels)

        self.step = g(c.M_STEP, "Last finished optimizer step (1-based, warm-up included)")
        self.steps_total = g(c.M_STEPS_TOTAL, "Planned optimizer steps (warm-up + measured)")
        self.step_time = g(c.M_STEP_TIME, "Wall time of the last step in seconds")
        self.tps = g(c.M_TPS, "Global tokens per second of the last step")
        self.mfu = g(c.M_MFU, "Model FLOPs utilisation of the last step, percent")
        self.peak_memory = g(c.M_PEAK_MEMORY, "Peak reserved device memory in bytes (max over ranks)")
        self.power = g(c.M_POWER, "Device power in watts (sum over GPUs)")
        self.energy = g(c.M_ENERGY, "Device energy in joules since the start of measurement (sum over GPUs)")
        self.loss = g(c.M_LOSS, "Loss of the last step")
        self._state = Enum(c.M_STATE, "Bench state", names, states=list(c.STATES), registry=r)
        self.state = self._state.labels(**self.labels)
        self.state.state("starting")
        self._info = Info(c.M_INFO.removesuffix("_info"), "What the case ran", names, registry=r)
        self._server = None
        self.port: int | None = None

    def set_info(self, info: dict) -> None:
        self._info.labels(**self.labels).info({k: str(v) for k, v in info.items()})

    def set_state(self, state: str) -> None:
        self.state.state(state)

    def serve(self, port: int) -> int:
        """Start the HTTP server (port 0: ephemeral); returns the bound port."""
        server, _thread = start_http_server(port, addr="0.0.0.0", registry=self.registry)
        self._server = server
        self.port = server.server_address[1]
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
