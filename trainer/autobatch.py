"""`--micro-batch auto`: the largest micro-batch whose real training step fits, found once and cached.

Search (`search`): try micro-batch 1, 2, 4, ... (doubling) until one does not fit, then binary search between the
last size that fit and the first that did not. A size fits when the real step runs (forward, backward and AdamW
step of bench mode, a freshly built model per trial so that `--ac auto` decides as it will for that size) without
a device out-of-memory error AND its peak memory stays under (1 - SAFETY_MARGIN) x the capacity:

- CUDA: peak = `torch.cuda.max_memory_reserved` over the trial; capacity = `--memory-limit-gib` when given, else
  the device's total memory (`torch.cuda.mem_get_info`). An OOM (caught, cache emptied) does not fit.
- CPU: there is no device OOM, so a capacity must be given (`--memory-limit-gib`, else BadConfig) and the peak is a
  measured footprint: the bytes of every parameter, gradient and optimizer state after the step plus the bytes of
  every tensor autograd saved for the backward during the forward (`saved_tensors_hooks`, storages counted once,
  parameters excluded). Transient buffers (a loss chunk's logits, kernel workspaces) are not in it; the margin
  covers them. That is what makes the search testable here; GPU runs use the allocator's own peak.

Every rank runs the trials on its own unwrapped model (FSDP would shard parameters: the unsharded trial is the
conservative bound); a size fits when it fits on every rank (all-reduce), and rank 0's answer is broadcast.
The answer is cached in `<cache dir>/autobatch.json` (`--cache-dir`, default ~/.cache/trainbench) under a key of the
model config, type, LoRA, sequence length, AC, attention, implementation, dtype, device name, capacity and torch
version; a cached answer skips the search. The result JSON gets `autobatch`: micro_batch, discovery_s, cached,
trials [{micro_batch, fits, peak_gib}], capacity_gib, margin, method.

`--batch-size` with auto: the optimizer step holds max(batch size, micro-batch) sequences rounded up to a multiple
of the micro-batch found (gradient accumulation over the rest).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from trainbench.trainer import contract as c
from trainbench.trainer import distributed as dist_mod
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.data import make_batch
from trainbench.trainer.losses import LossModule
from trainbench.trainer.models import build_impl
from trainbench.trainer.result import is_oom
from trainbench.trainer.specs import ModelSpec

SAFETY_MARGIN = 0.10
MAX_MICRO_BATCH = 4096
CACHE_FILE = "autobatch.json"


def cache_dir(cfg: JobConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "trainbench"


def device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def capacity_bytes(cfg: JobConfig, device) -> tuple[float, str]:
    if cfg.memory_limit_gib:
        return cfg.memory_limit_gib * 2**30, "memory-limit"
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[1]), "device-total"
    raise BadConfig("--micro-batch auto on a CPU needs --memory-limit-gib (there is no device memory to run out of)")


def cache_key(cfg: JobConfig, spec: ModelSpec, device, capacity: float) -> str:
    parts = {
        "model": spec.config,
        "type": cfg.type,
        "lora": [cfg.effective_lora_rank, list(cfg.lora_targets)] if cfg.is_lora else None,
        "seq_len": cfg.seq_len,
        "docs_per_seq": cfg.docs_per_seq,
        "ac": cfg.ac,
        "attn": cfg.attn,
        "impl": cfg.impl,
        "dtype": cfg.dtype,
        "compile": cfg.compile,
        "loss_chunk": cfg.loss_chunk,
        "device": device_name(device),
        "capacity": round(capacity),
        "margin": SAFETY_MARGIN,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_cache(path: Path, key: str, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = read_cache(path)
    data[key] = entry
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --- one trial ------------------------------------------------------------------------------------------------


def _storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        st = t.untyped_storage()
        key = (st.data_ptr(), st.device.type)
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


def trial_step(cfg: JobConfig, spec: ModelSpec, device, micro_batch: int, impl=None) -> float:
    """Run one real training step at `micro_batch`; return its peak bytes (see the module doc). OOM propagates.
    `impl`: a model built earlier to reuse (its gradients are dropped afterwards); None builds one for this size."""
    tcfg = cfg.replace(micro_batch=micro_batch, batch_size=micro_batch)
    is_cuda = device.type == "cuda"
    if is_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    own = impl is None
    if own:
        impl = build_impl(tcfg, spec, device)
    opt = None
    try:
        loss_module = LossModule(impl, tcfg)
        params = [p for p in loss_module.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, **({"fused": True} if is_cuda else {}))
        gen = torch.Generator().manual_seed(cfg.seed)
        batch = make_batch(micro_batch, cfg.seq_len, cfg.docs_per_seq, spec.vocab, gen).to(device)
        param_ptrs = {p.untyped_storage().data_ptr() for p in loss_module.parameters()}
        saved: list[torch.Tensor] = []

        def pack(t):
            if t.untyped_storage().data_ptr() not in param_ptrs:
                saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), impl.context():
            loss, _ = loss_module(batch, float(batch.loss_mask.sum()) or 1.0)
        activations = _storage_bytes(saved)
        saved.clear()
        with impl.context():
            loss.backward()
        opt.step()
        if is_cuda:
            torch.cuda.synchronize(device)
            return float(torch.cuda.max_memory_reserved(device))
        static = _storage_bytes(list(loss_module.parameters()))
        static += _storage_bytes([p.grad for p in params if p.grad is not None])
        static += _storage_bytes([v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)])
        return float(static + activations)
    finally:
        for p in impl.module.parameters():
            p.grad = None
        del opt, impl
        if is_cuda:
            torch.cuda.empty_cache()


def search(fits, limit: int = MAX_MICRO_BATCH) -> tuple[int, list[int]]:
    """Largest m in [1, limit] with fits(m), assuming fits is monotone (true then false). Doubling then binary
    search; returns (m, the sizes tried in order). 0 when even 1 does not fit."""
    tried = []

    def test(m):
        tried.append(m)
        return fits(m)

    if not test(1):
        return 0, tried
    lo = 1
    while lo < limit:
        hi = min(lo * 2, limit)
        if not test(hi):
            break
        lo = hi
    else:
        return lo, tried
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if test(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried


def discover(cfg: JobConfig, spec: ModelSpec, device, world=None, log=sys.stderr) -> dict:
    """Search the largest micro-batch (no cache). Returns the autobatch record."""
    capacity, source = capacity_bytes(cfg, device)
    budget = (1.0 - SAFETY_MARGIN) * capacity
    trials = []
    shared = []  # without --ac auto the model does not depend on the size: build it once, reuse it

    def fits(m: int) -> bool:
        try:
            if cfg.ac != "auto" and not shared:
                shared.append(build_impl(cfg.replace(micro_batch=1, batch_size=1), spec, device))
            peak = trial_step(cfg, spec, device, m, shared[0] if shared else None)
            ok = peak <= budget
        except Exception as exc:  # noqa: BLE001 - an OOM is an answer; anything else is raised
            if not is_oom(exc):
                raise
            peak, ok = None, False
        if world is not None and world.distributed:
            ok = dist_mod.reduce_scalar(0.0 if ok else 1.0, "max", world, device) == 0.0
        trials.append({"micro_batch": m, "fits": ok, "peak_gib": None if peak is None else peak / 2**30})
        if world is not None and not world.is_main:
            return ok
        print(
            f"micro-batch auto: {m} {'fits' if ok else 'does not fit'}"
            + ("" if peak is None else f" (peak {peak / 2**30:.3g} GiB of {budget / 2**30:.3g} GiB)"),
            file=log,
            flush=True,
        )
        return ok

    t0 = time.perf_counter()
    try:
        found, _ = search(fits)
    finally:
        shared.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "micro_batch": found,
        "discovery_s": time.perf_counter() - t0,
        "cached": False,
        "trials": trials,
        "capacity_gib": capacity / 2**30,
        "capacity_source": source,
        "margin": SAFETY_MARGIN,
        "method": "cuda-max-reserved" if device.type == "cuda" else "cpu-footprint",
        "device": device_name(device),
    }


def resolve_auto(cfg: JobConfig, spec: ModelSpec, device, world, exporter=None) -> tuple[JobConfig, dict]:
    """(cfg with the micro-batch found, the autobatch record): from the cache or a search; rank 0 decides."""
    dist_mod.init(world, device)
    capacity, _ = capacity_bytes(cfg, device)
    key = cache_key(cfg, spec, device, capacity)
    path = cache_dir(cfg) / CACHE_FILE
    entry = read_cache(path).get(key) if world.is_main else None
    cached = bool(entry)
    found_any = dist_mod.reduce_scalar(1.0 if cached else 0.0, "max", world, device)
    if found_any:  # rank 0 found it cached: no search anywhere
        record = dict(entry or {}, cached=True)
    else:
        record = discover(cfg, spec, device, world)
        if world.is_main and record["micro_batch"] > 0:
            write_cache(path, key, {k: v for k, v in record.items() if k != "cached"} | {"key": key})
    m = int(record.get("micro_batch") or 0) if world.is_main else 0
    if world.distributed:
        t = torch.tensor([m], device=device if device.type == "cuda" else "cpu", dtype=torch.long)
        torch.distributed.broadcast(t, src=0)
        m = int(t.item())
    if m < 1:
        raise torch.OutOfMemoryError(
            f"--micro-batch auto: even a micro-batch of 1 does not fit in {capacity / 2**30:.3g} GiB "
            f"(x {1 - SAFETY_MARGIN:.2f} margin) at --seq-len {cfg.seq_len}"
        )
    record["micro_batch"] = m
    record["cache_file"] = str(path)
    batch = m if cfg.batch_size <= m else math.ceil(cfg.batch_size / m) * m
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    if exporter is not None:
        from prometheus_client import Gauge

        g = Gauge(
            c.M_MICRO_BATCH, "Micro-batch that ran (auto: the size found)", list(c.LABELS), registry=exporter.registry
        )
        g.labels(**exporter.labels).set(m)
    how = "cached" if record["cached"] else "found in {:.1f} s".format(record["discovery_s"])
    if world.is_main:
        print(
            f"micro-batch auto: {m} ({how}), batch size {batch}",
            file=sys.stderr,
            flush=True,
        )
    return cfg.replace(micro_batch=m, batch_size=batch), record
