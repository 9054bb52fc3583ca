"""NVML device selection. No NVIDIA GPU or driver exists on the CI machine, so NVML and torch's device
properties are stand-ins here (the one mock in these tests): what is checked is which NVML call picks the GPU."""

import types

import torch

from trainbench.trainer import power


class FakeNvml:
    def __init__(self):
        self.calls = []

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802 (NVML's names)
        self.calls.append(("uuid", uuid))
        return uuid

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        self.calls.append(("index", index))
        return index


def test_nvml_handle_follows_torch_device_by_uuid(monkeypatch):
    # CUDA_VISIBLE_DEVICES=1: torch's device 0 is the machine's second GPU; NVML index 0 would be the first
    props = types.SimpleNamespace(uuid="58d6b1b5-0000-1111-2222-333344445555")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    nv = FakeNvml()
    assert power.nvml_handle(nv, 0) == "GPU-58d6b1b5-0000-1111-2222-333344445555"
    assert nv.calls == [("uuid", "GPU-58d6b1b5-0000-1111-2222-333344445555")]


def test_nvml_handle_falls_back_to_index_without_uuid(monkeypatch):
    def no_props(i):
        raise RuntimeError("no CUDA")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_props)
    nv = FakeNvml()
    assert power.nvml_handle(nv, 1) == 1
    assert nv.calls == [("index", 1)]


def test_no_meter_on_cpu():
    assert power.open_meter("cpu", 0) is None
