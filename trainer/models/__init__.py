"""Model implementations for bench mode and the choice between them (`--impl`).

- `hf` (`models/hf.py`): transformers + peft, any architecture with a shipped config.
- `fast` (`models/qwen3_fast.py`, optional): a custom implementation. Interface: the module defines
  `SUPPORTED_MODEL_TYPES` (e.g. {"qwen3"}) and `build(cfg, spec, device) -> Impl`, and uses the transformers
  parameter names so weights load both ways.

`--impl auto`: fast when it exists, supports the model type and the device is CUDA; else hf.
`--impl fast` on a model (or machine) without a fast implementation: BadConfig.
"""

from __future__ import annotations

import importlib

import torch

from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.models import hf
from trainbench.trainer.models.base import Impl
from trainbench.trainer.specs import ModelSpec

__all__ = ["Impl", "build_impl", "fast_module", "choose_impl"]


def fast_module():
    """The fast implementation module, or None when it is not there (or does not import)."""
    try:
        return importlib.import_module("trainbench.trainer.models.qwen3_fast")
    except ImportError:
        return None


def choose_impl(cfg: JobConfig, spec: ModelSpec, device: torch.device) -> str:
    fast = fast_module()
    supported = fast is not None and spec.model_type in getattr(fast, "SUPPORTED_MODEL_TYPES", ())
    if cfg.impl == "hf":
        return "hf"
    if cfg.cp > 1 or cfg.ep > 1:  # context/expert parallelism live in the fast implementation only
        if not supported:
            raise BadConfig(f"--cp/--ep need the fast implementation, which does not run {spec.model_type!r}")
        return "fast"
    if cfg.impl == "fast":
        if not supported:
            why = "is not installed" if fast is None else f"does not support model type {spec.model_type!r}"
            raise BadConfig(f"--impl fast: the fast implementation {why}")
        return "fast"
    return "fast" if supported and device.type == "cuda" else "hf"


def build_impl(cfg: JobConfig, spec: ModelSpec, device: torch.device) -> Impl:
    which = choose_impl(cfg, spec, device)
    if which == "fast":
        return fast_module().build(cfg, spec, device)
    return hf.build(cfg, spec, device)
