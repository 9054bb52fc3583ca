"""The training types (sft-full, rl-full, rl-lora): train the model on synthetic packed data and measure it.

`train(ctx)` reads top to bottom: `build` (process group, layout, model, data parallelism, optimizer, batches),
`run_steps` (warm-up and measured optimizer steps, live metrics), `measure` (the result dict).

Measurement, per optimizer step (warm-up steps are run and recorded but excluded from the summaries):
- step_time: wall time of the step (forward + backward of every micro-batch + optimizer), `cuda.synchronize()`d;
- tps: global tokens per second = batch_size * seq_len * world_size / step_time;
- mfu: 100 * flops_per_token * tps / (peak_flops * world_size), percent, peak_flops per device;
- peak memory: max over ranks of `torch.cuda.max_memory_reserved`; power: NVML/amdsmi instantaneous power summed
  over ranks; energy: the driver's total-energy counter over the measured steps, summed over ranks.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field

import torch

from trainbench.trainer import contract as c
from trainbench.trainer import distributed as dist_mod
from trainbench.trainer import health
from trainbench.trainer.config import BadConfig
from trainbench.trainer.context import RunContext
from trainbench.trainer.data import make_batches
from trainbench.trainer.lora import adapter_params
from trainbench.trainer.losses import LossModule
from trainbench.trainer.models import Impl, build_impl
from trainbench.trainer.parallel.mesh import Layout, get_layout
from trainbench.trainer.power import open_meter
from trainbench.trainer.result import base_result, environment, mfu_percent, summary


@dataclass
class Setup:
    """What `build` made for the steps."""

    impl: Impl
    layout: Layout
    dp: str | None  # ddp, fsdp or None (one process)
    step_module: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    batches: list
    tokens_per_step: int
    flops_per_token: float  # prime-rl's formula (specs.flops_per_token)
    done_flops_per_token: float  # the work actually done (specs.done_flops_per_token over the batches)
    meter: object  # power.Meter or None
    done_attention_flops_per_token: float = 0.0  # its attention part (specs.done_flops_split); the rest is GEMMs


@dataclass
class Steps:
    """What `run_steps` recorded."""

    records: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    power: list = field(default_factory=list)
    energy_start: float | None = None
    health_start: dict | None = None  # environment health when the measured steps began (trainer/health.py)
    health_end: dict | None = None


def train(ctx: RunContext) -> dict:
    s = build(ctx)
    steps = run_steps(ctx, s)
    return measure(ctx, s, steps)


def build(ctx: RunContext) -> Setup:
    cfg, spec, device, world = ctx.cfg, ctx.spec, ctx.device, ctx.world
    dist_mod.init(world, device)
    torch.manual_seed(cfg.training.seed)
    t_build = time.perf_counter()
    layout = get_layout(cfg, world, device)  # --cp / --ep process groups (parallel/)
    impl = build_impl(cfg, spec, device)
    if world.is_main:
        print(
            f"built {spec.name} ({impl.name}, attn {impl.attn_backend}, ac {impl.ac}) on {device} "
            f"in {time.perf_counter() - t_build:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    loss_module = LossModule(impl, cfg)
    static_bytes = impl.n_params() * 2 + impl.n_trainable() * 6
    dp = dist_mod.choose_dp(cfg.parallel.dp, world, device, list(getattr(impl, "blocks", []) or []), static_bytes)
    if dp == "fsdp":
        if not getattr(impl, "blocks", None):
            raise BadConfig(f"--dp fsdp: the {impl.name} implementation exposes no transformer blocks to shard")
        step_module = dist_mod.wrap_fsdp(loss_module, impl.blocks, world, device)
    elif dp == "ddp":
        layout.before_wrap(loss_module)
        step_module = dist_mod.wrap_ddp(loss_module, world, device)
    else:
        step_module = loss_module
    params = [p for p in step_module.parameters() if p.requires_grad]
    opt_kw = {"fused": True} if ctx.is_cuda else {}
    optimizer = torch.optim.AdamW(params, lr=cfg.training.lr, weight_decay=0.0, **opt_kw)
    batches = [layout.shard(b.to(device)) for b in make_batches(cfg, spec, cfg.training.seed + 1000 * layout.data_rank)]
    return Setup(
        impl=impl,
        layout=layout,
        dp=dp,
        step_module=step_module,
        params=params,
        optimizer=optimizer,
        batches=batches,
        tokens_per_step=cfg.training.batch_size
        * cfg.training.seq_len
        * layout.data_ranks,  # a CP group trains on one sequence
        flops_per_token=spec.flops_per_token(
            cfg.training.seq_len, cfg.effective_lora_rank, tuple(cfg.build.lora_targets)
        ),
        done_flops_per_token=_done_flops_per_token(spec, cfg, batches),
        done_attention_flops_per_token=_done_flops_per_token(spec, cfg, batches, part=1),
        meter=open_meter(device.type, device.index or 0, hip=bool(getattr(torch.version, "hip", None))),
    )


def _done_flops_per_token(spec, cfg, batches, part: int | None = None) -> float:
    """FLOPs per token of the work the batches really ask for (documents' causal attention), token-weighted;
    `part` 0 or 1: only the GEMM or the attention part (specs.done_flops_split)."""
    flops = tokens = 0.0
    for b in batches:
        lens = [int(x) for x in (b.cu_seqlens[1:] - b.cu_seqlens[:-1]).tolist()]
        n = sum(lens)
        split = spec.done_flops_split(lens, cfg.effective_lora_rank, tuple(cfg.build.lora_targets))
        flops += (sum(split) if part is None else split[part]) * n
        tokens += n
    return flops / tokens if tokens else 0.0


def run_steps(ctx: RunContext, s: Setup) -> Steps:
    cfg, device, world, exporter = ctx.cfg, ctx.device, ctx.world, ctx.exporter
    layout, meter = s.layout, s.meter
    accum = cfg.training.grad_accum
    total_steps = cfg.training.warmup_steps + cfg.training.steps
    if exporter is not None:
        exporter.set_info(
            {
                "impl": s.impl.name,
                "attn": s.impl.attn_backend,
                "ac": s.impl.ac,
                "seq_len": cfg.training.seq_len,
                "world_size": world.size,
                "data_parallel": s.dp or "none",
                "cp": cfg.parallel.cp,
                "ep": cfg.parallel.ep,
                "flops_per_token": s.flops_per_token,
                "peak_flops": ctx.peak,
            }
        )
        exporter.steps_total.set(total_steps)
    out = Steps()
    ctx.sync()
    if world.is_main:  # from the first step: a window long enough to tell host load from noise
        out.health_start = health.snapshot((device.index or 0) if ctx.is_cuda else None)
    for step in range(1, total_steps + 1):
        warm = step <= cfg.training.warmup_steps
        if exporter is not None:
            exporter.set_state("warmup" if warm else "measuring")
        if not warm and out.energy_start is None and meter is not None:
            ctx.sync()
            out.energy_start = meter.energy_j()
        micro = [s.batches[((step - 1) * accum + i) % len(s.batches)] for i in range(accum)]
        normalizer = float(sum(layout.loss_tokens(b) for b in micro)) or 1.0
        ctx.sync()
        t0 = time.perf_counter()
        step_loss, step_kept = _optimizer_step(ctx, s, micro, normalizer)
        ctx.sync()
        dt = time.perf_counter() - t0
        loss_value = layout.step_loss(step_loss)
        tps = s.tokens_per_step / dt
        mfu = mfu_percent(s.flops_per_token, tps, ctx.peak, world.size)
        power = meter.power_w() if meter is not None else None
        if power is not None and world.distributed:
            power = dist_mod.reduce_scalar(power, "sum", world, device)
        rec = {"step": step, "step_time": dt, "tps": tps, "mfu": mfu, "loss": loss_value, "warmup": warm}
        if step_kept:
            rec["kept_fraction"] = float(torch.stack(step_kept).mean())
            if not warm:
                out.kept.append(rec["kept_fraction"])
        if power is not None:
            rec["power_w"] = power
            if not warm:
                out.power.append(power)
        out.records.append(rec)
        out.losses.append(loss_value)
        if world.is_main:  # progress on stderr (stdout's last line is the result)
            print(
                f"step {step}/{total_steps}{' (warm-up)' if warm else ''}: {dt:.3f} s, {tps:.4g} tok/s, "
                f"MFU {mfu:.2f}%, loss {loss_value:.4f}",
                file=sys.stderr,
                flush=True,
            )
        if exporter is not None:
            _export_step(ctx, s, out, rec)
        if not math.isfinite(loss_value):
            raise RuntimeError(f"loss is {loss_value} at step {step}")
    if out.health_start is not None:
        out.health_end = health.snapshot((device.index or 0) if ctx.is_cuda else None)
    return out


def _optimizer_step(ctx: RunContext, s: Setup, micro: list, normalizer: float):
    """Forward and backward of each micro-batch (gradient sync on the last), then the optimizer step."""
    layout = s.layout
    step_loss = torch.zeros((), device=ctx.device, dtype=torch.float32)
    step_kept = []
    for i, batch in enumerate(micro):
        last = i == len(micro) - 1
        if s.dp == "fsdp":
            s.step_module.set_requires_gradient_sync(last)
        no_sync = s.step_module.no_sync() if (s.dp == "ddp" and not last) else contextlib.nullcontext()
        with no_sync, s.impl.context():
            loss, kept = s.step_module(batch, normalizer)
            (loss * layout.grad_scale if layout.cp > 1 else loss).backward()
        step_loss += loss.detach().float()
        if kept is not None:
            step_kept.append(kept)
    layout.after_backward(s.params)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    return step_loss, step_kept


def _export_step(ctx: RunContext, s: Setup, out: Steps, rec: dict) -> None:
    exporter = ctx.exporter
    exporter.step.set(rec["step"])
    exporter.step_time.set(rec["step_time"])
    exporter.tps.set(rec["tps"])
    exporter.mfu.set(rec["mfu"])
    exporter.loss.set(rec["loss"])
    if rec.get("power_w") is not None:
        exporter.power.set(rec["power_w"])
    if ctx.is_cuda:
        exporter.peak_memory.set(torch.cuda.max_memory_reserved(ctx.device))
    if out.energy_start is not None:
        exporter.energy.set(s.meter.energy_j() - out.energy_start)


def measure(ctx: RunContext, s: Setup, steps: Steps) -> dict:
    """The result: summaries of the measured steps, energy and peak memory over the ranks, replica check."""
    cfg, spec, device, world, exporter = ctx.cfg, ctx.spec, ctx.device, ctx.world, ctx.exporter
    meter = s.meter
    energy = None
    if meter is not None and steps.energy_start is not None:
        energy = dist_mod.reduce_scalar(meter.energy_j() - steps.energy_start, "sum", world, device)
    peak_mem = None
    if ctx.is_cuda:
        peak_mem = dist_mod.reduce_scalar(float(torch.cuda.max_memory_reserved(device)), "max", world, device)
        if exporter is not None:
            exporter.peak_memory.set(peak_mem)
            if energy is not None:
                exporter.energy.set(energy)

    replica_spread = None
    if s.dp == "ddp":  # data parallel must keep the replicas identical: check it, cheaply
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in s.layout.replicated(s.params)))
        hi = dist_mod.reduce_scalar(checksum, "max", world, device)
        lo = -dist_mod.reduce_scalar(-checksum, "max", world, device)
        replica_spread = hi - lo

    records = steps.records
    measured = [r for r in records if not r["warmup"]]
    measured_tokens = s.tokens_per_step * len(measured)
    result = base_result(cfg, spec, world.size)
    env = environment(device)
    if meter is not None:
        env["driver"] = meter.driver()
    impl = s.impl
    result.update(
        impl=impl.name,
        attn_backend=impl.attn_backend,
        ac=impl.ac,
        flops_per_token=s.flops_per_token,
        peak_flops=ctx.peak,
        peak_flops_source=ctx.peak_source,
        tokens_per_step=s.tokens_per_step,
        n_active=spec.n_active(),
        n_trainable=impl.n_trainable(),
        n_adapter=adapter_params(impl.module) if cfg.is_lora else 0,
        metrics={
            **{k: summary([r[k] for r in measured]) for k in c.SUMMARY_METRICS},
            # the work actually done: causal attention within each document, the real head_dim (specs.py)
            "mfu_done": summary([r["mfu"] * s.done_flops_per_token / s.flops_per_token for r in measured]),
        },
        done_flops_per_token=s.done_flops_per_token,
        done_attention_flops_per_token=s.done_attention_flops_per_token,  # the rest of done_flops_per_token: GEMMs
        health=health.summarize(steps.health_start, steps.health_end) if steps.health_end else None,
        peak_memory_gib=None if peak_mem is None else peak_mem / 2**30,
        power_w=summary(steps.power),
        energy_j=energy,
        tokens_per_joule=(measured_tokens / energy) if energy else None,
        kept_fraction=summary(steps.kept),
        replica_spread=replica_spread,
        data_parallel=s.dp,
        parallel=s.layout.info(),
        # the first step's wall time (compile, autotuning, cold caches): top-level so that it survives the
        # termination log's trimming of the per-step list
        first_step_s=records[0]["step_time"] if records else None,
        losses=steps.losses,
        steps=records,
        environment=env,
    )
    return result
