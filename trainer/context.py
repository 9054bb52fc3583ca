"""The run context: what every bench type (train.py, generate.py, verify.py) gets from the entry (bench.py).

`open_context(cfg)` resolves the model, this rank's device and world, and the peak FLOP/s the run is measured
against, and checks the parallel layout; `RunContext.start_metrics()` starts rank 0's /metrics exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainbench.trainer import contract as c
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.distributed import World, env_world
from trainbench.trainer.hardware import CPU_NOMINAL_PEAK_FLOPS, peak_flops
from trainbench.trainer.metrics import Exporter
from trainbench.trainer.parallel.layout import validate
from trainbench.trainer.specs import ModelSpec, UnknownModelError, resolve_model


@dataclass
class RunContext:
    cfg: JobConfig
    spec: ModelSpec
    device: torch.device
    world: World
    peak: float  # peak FLOP/s of one device
    peak_source: str  # override, table or cpu-nominal
    exporter: Exporter | None = None  # rank 0's /metrics (None: other ranks, or --metrics-port -1)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        """Wait for the device (timings are taken between syncs)."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def start_metrics(self) -> Exporter | None:
        m = self.cfg.metrics
        if self.world.is_main and m.metrics_port >= 0:
            labels = {"run": m.run, "case": m.case, "model": self.spec.name, "type": self.cfg.type, "pool": m.pool}
            self.exporter = Exporter(labels)
            port = self.exporter.serve(m.metrics_port)
            print(c.METRICS_PORT_LINE_PREFIX + str(port), flush=True)
        return self.exporter


def pick_device(cfg: JobConfig, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise BadConfig("--device cuda but no CUDA/ROCm device is visible")
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def resolve_peak(cfg: JobConfig, device) -> tuple[float, str]:
    if cfg.metrics.peak_tflops:
        return peak_flops("", cfg.metrics.peak_tflops), "override"
    if device.type == "cuda":
        return peak_flops(torch.cuda.get_device_name(device)), "table"
    return CPU_NOMINAL_PEAK_FLOPS, "cpu-nominal"


def open_context(cfg: JobConfig) -> RunContext:
    """Model, device, world and peak of this rank; refuses (BadConfig) what the layout cannot run."""
    world = env_world()
    try:
        spec = resolve_model(cfg.build.model)
    except UnknownModelError as e:
        raise BadConfig(str(e)) from None
    device = pick_device(cfg, world.local_rank)
    validate(cfg, spec, world.size)
    peak, source = resolve_peak(cfg, device)
    return RunContext(cfg, spec, device, world, peak, source)
