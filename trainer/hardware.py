"""Peak dense bf16 FLOP/s per device, by the name the driver reports. Torch-free.

Dense (no sparsity) tensor-core bf16 figures from the vendors' data sheets. An unknown device is an
error unless the caller gives a peak explicitly: MFU against a guessed peak would be a made-up number.
"""

from __future__ import annotations

# (substring of the lower-cased device name, peak FLOP/s). First match wins, so specific names go first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("gb200", 2.5e15),
    ("b200", 2.25e15),
    ("b100", 1.75e15),
    ("h200 nvl", 835e12),
    ("h200", 989e12),
    ("h100 nvl", 835e12),
    ("h100 pcie", 756e12),
    ("h100", 989e12),  # SXM (reported as "NVIDIA H100 80GB HBM3")
    ("h800", 989e12),
    ("gh200", 989e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("l40s", 362e12),
    ("rtx 6000 ada", 364.25e12),
    ("a6000", 154.85e12),  # RTX A6000: 309.7 TF with sparsity, 154.85 dense
    ("a10g", 70e12),
    ("l4", 121e12),
    ("mi355x", 2.5e15),
    ("mi325x", 1307.4e12),
    ("mi300x", 1307.4e12),
    ("mi300a", 980.6e12),
    ("mi250x", 383e12),
    ("radeon 8060s", 59.4e12),  # Strix Halo iGPU (gfx1151)
)


class UnknownDeviceError(ValueError):
    pass


def _lookup(table, device_name: str) -> float | None:
    """The value of the first (substring key, value) row whose key is in the lower-cased device name."""
    low = device_name.lower()
    return next((value for key, value in table if key in low), None)


def peak_flops(device_name: str, override_tflops: float | None = None) -> float:
    """Peak bf16 FLOP/s for one device; `override_tflops` (TFLOP/s) wins when given."""
    if override_tflops:
        return float(override_tflops) * 1e12
    value = _lookup(PEAK_BF16_FLOPS, device_name)
    if value is None:
        raise UnknownDeviceError(
            f"no peak FLOP/s known for device {device_name!r}; pass --peak-tflops (the pool's peakTFLOPs) "
            "so that MFU is computed against a real figure"
        )
    return value


# Bench mode on a CPU (CI, laptops) has no data-sheet peak: MFU there is against this nominal 1 TFLOP/s per
# process, and the result says so (`peak_flops_source: "cpu-nominal"`). Never used for a GPU.
CPU_NOMINAL_PEAK_FLOPS = 1e12


# Peak memory (HBM/GDDR) bandwidth in bytes/s per device, from the vendors' data sheets, matched like the FLOPs table.
# Decode is memory-bound: type generate reports (weight + KV-cache bytes read per step) / step time / this.
PEAK_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("gb200", 8.0e12),
    ("b200", 8.0e12),
    ("b100", 8.0e12),
    ("h200 nvl", 4.8e12),
    ("h200", 4.8e12),
    ("gh200", 4.0e12),
    ("h100 nvl", 3.9e12),
    ("h100 pcie", 2.0e12),
    ("h100", 3.35e12),  # SXM5 HBM3
    ("h800", 3.35e12),
    ("a100-sxm4-40gb", 1.555e12),
    ("a100-pcie-40gb", 1.555e12),
    ("a100 80gb pcie", 1.935e12),
    ("a100", 2.039e12),  # SXM4 80GB
    ("a800", 2.039e12),
    ("l40s", 864e9),
    ("rtx 6000 ada", 960e9),
    ("a6000", 768e9),
    ("a10g", 600e9),
    ("l4", 300e9),
    ("mi355x", 8.0e12),
    ("mi325x", 6.0e12),
    ("mi300x", 5.3e12),
    ("mi300a", 5.3e12),
    ("mi250x", 3.2768e12),
    ("radeon 8060s", 256e9),  # Strix Halo LPDDR5X-8000, 256-bit
)

# CPU runs (CI) have no data-sheet bandwidth: utilisation there is against this nominal figure, and says so.
CPU_NOMINAL_BANDWIDTH = 50e9


def peak_bandwidth(device_name: str, override_gbps: float | None = None) -> float:
    """Peak memory bandwidth in bytes/s for one device; `override_gbps` (GB/s) wins when given."""
    if override_gbps:
        return float(override_gbps) * 1e9
    value = _lookup(PEAK_BANDWIDTH, device_name)
    if value is None:
        raise UnknownDeviceError(
            f"no peak memory bandwidth known for device {device_name!r}; pass --peak-bandwidth-gbps "
            "so that decode bandwidth utilisation is computed against a real figure"
        )
    return value
