"""GPU power and energy: NVML (nvidia-ml-py) on NVIDIA, amdsmi on ROCm; `open_meter()` is None where neither reads.

Energy comes from the driver's total-energy counter (NVML `nvmlDeviceGetTotalEnergyConsumption`, millijoules;
amdsmi `amdsmi_get_energy_count`), so it is exact over the measured window rather than integrated from samples.
"""

from __future__ import annotations


def nvml_handle(nv, index: int):
    """NVML's handle of torch's CUDA device `index`. NVML numbers every GPU of the machine and ignores
    CUDA_VISIBLE_DEVICES, so the device is found by its UUID (a process on the second GPU, CUDA index 0, would
    otherwise read the first GPU's power); by index only where torch gives no UUID."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:
        return nv.nvmlDeviceGetHandleByIndex(index)
    return nv.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")


class NvmlMeter:
    def __init__(self, index: int):
        import pynvml

        pynvml.nvmlInit()
        self._nv = pynvml
        self._h = nvml_handle(pynvml, index)
        self.energy_j()  # raises when the counter is not supported
        self.power_w()

    def energy_j(self) -> float:
        return self._nv.nvmlDeviceGetTotalEnergyConsumption(self._h) / 1000.0

    def power_w(self) -> float:
        return self._nv.nvmlDeviceGetPowerUsage(self._h) / 1000.0

    def driver(self) -> str | None:
        v = self._nv.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v


class AmdSmiMeter:
    def __init__(self, index: int):
        import amdsmi

        amdsmi.amdsmi_init()
        self._a = amdsmi
        self._h = amdsmi.amdsmi_get_processor_handles()[index]
        self.energy_j()
        self.power_w()

    def energy_j(self) -> float:
        e = self._a.amdsmi_get_energy_count(self._h)
        return float(e["energy_accumulator"]) * float(e["counter_resolution"]) / 1e6

    def power_w(self) -> float:
        p = self._a.amdsmi_get_power_info(self._h)
        for key in ("current_socket_power", "average_socket_power", "socket_power"):
            if isinstance(p.get(key), (int, float)):
                return float(p[key])
        raise RuntimeError("no power reading")

    def driver(self) -> str | None:
        try:
            return str(self._a.amdsmi_get_gpu_driver_info(self._h).get("driver_version"))
        except Exception:
            return None


def open_meter(device_type: str, index: int, hip: bool = False):
    """A meter for local GPU `index`, or None (CPU, library missing, counter unreadable)."""
    if device_type != "cuda":
        return None
    for cls in (AmdSmiMeter, NvmlMeter) if hip else (NvmlMeter,):
        try:
            return cls(index)
        except Exception:
            continue
    return None
