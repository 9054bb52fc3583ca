"""Bench mode: train a model architecture on synthetic packed data for a few steps and measure it.

`run_bench(cfg) -> dict` runs in-process (under torchrun: one call per rank) and returns the result dict that is
also printed as the last stdout line (`TRAINBENCH_RESULT <json>`), written to `--output` and to
/dev/termination-log. `main(argv)` wraps it with the exit codes of `contract.py`.

Measurement, per optimizer step (warm-up steps are run and recorded but excluded from the summaries):
- step_time: wall time of the step (forward + backward of every micro-batch + optimizer), `cuda.synchronize()`d;
- tps: global tokens per second = batch_size * seq_len * world_size / step_time;
- mfu: 100 * flops_per_token * tps / (peak_flops * world_size), percent, peak_flops per device;
- peak memory: max over ranks of `torch.cuda.max_memory_reserved`; power: NVML/amdsmi instantaneous power summed
  over ranks; energy: the driver's total-energy counter over the measured steps, summed over ranks.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import statistics
import sys
import time
import warnings

from trainbench.trainer import contract as c
from trainbench.trainer.config import BadConfig, BenchConfig, parse_args
from trainbench.trainer.hardware import CPU_NOMINAL_PEAK_FLOPS, UnknownDeviceError, peak_flops
from trainbench.trainer.specs import ModelSpec, UnknownModelError, resolve_model

TERMINATION_LOG_LIMIT = 4096
METRICS_PORT_PREFIX = c.METRICS_PORT_LINE_PREFIX


class BenchFailure(Exception):
    """Carries the exporter's failed state; raised by run_bench around the real exception."""


# --- helpers ---------------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
    }


def mfu_percent(flops_per_token: float, tps: float, peak: float, world_size: int) -> float:
    return 100.0 * flops_per_token * tps / (peak * world_size)


def classify_error(exc: BaseException) -> tuple[int, str, str] | None:
    """(exit code, reason, one-line message) for the failures bench mode reports cleanly; None otherwise."""
    import torch

    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (BadConfig, UnknownModelError, UnknownDeviceError)):
        return c.EXIT_BAD_CONFIG, c.EXIT_REASONS[c.EXIT_BAD_CONFIG], msg
    oom_types = (torch.OutOfMemoryError,)
    low = msg.lower()
    if isinstance(exc, oom_types) or (
        isinstance(exc, RuntimeError) and ("out of memory" in low or "can't allocate memory" in low)
    ):
        return c.EXIT_OOM, c.EXIT_REASONS[c.EXIT_OOM], msg[:500]
    if isinstance(exc, RuntimeError) and "no available kernel" in low:
        return c.EXIT_BAD_CONFIG, c.EXIT_REASONS[c.EXIT_BAD_CONFIG], "attention backend cannot run: " + msg[:400]
    return None


def pick_device(cfg: BenchConfig, local_rank: int):
    import torch

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


def resolve_peak(cfg: BenchConfig, device) -> tuple[float, str]:
    import torch

    if cfg.peak_tflops:
        return peak_flops("", cfg.peak_tflops), "override"
    if device.type == "cuda":
        return peak_flops(torch.cuda.get_device_name(device)), "table"
    return CPU_NOMINAL_PEAK_FLOPS, "cpu-nominal"


def check_model(cfg: BenchConfig, spec: ModelSpec, world_size: int) -> None:
    from trainbench.trainer.parallel import validate

    validate(cfg, spec, world_size)


def environment(device) -> dict:
    import torch

    env = {
        "hostname": socket.gethostname(),
        "gpu_name": None,
        "gpu_count": 0,
        "driver": None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "python": platform.python_version(),
    }
    for pkg in ("transformers", "peft"):
        try:
            env[pkg] = __import__(pkg).__version__
        except Exception:
            env[pkg] = None
    if device.type == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(device)
        env["gpu_count"] = torch.cuda.device_count()
    return env


def base_result(cfg: BenchConfig, spec: ModelSpec | None, world_size: int) -> dict:
    conf = cfg.to_dict()
    if spec is not None:
        conf["model"] = spec.name
        conf["hf_name"] = spec.hf_name
    return {
        "schema": c.RESULT_SCHEMA,
        "status": "ok",
        "error": None,
        "config": conf,
        "world_size": world_size,
    }


# --- output --------------------------------------------------------------------------------------------------


def compact(result: dict) -> str:
    return json.dumps(result, separators=(",", ":"), default=str)


def for_termination_log(result: dict, limit: int = TERMINATION_LOG_LIMIT) -> str:
    """The result JSON within `limit` bytes: per-step lists go first, then the environment, then config detail."""
    text = compact(result)
    if len(text.encode()) <= limit:
        return text
    from trainbench.trainer.verify import slim_for_log  # generate/verify blocks without their detail

    r = slim_for_log({k: v for k, v in result.items() if k not in ("steps", "losses")})
    r["truncated"] = True
    text = compact(r)
    if len(text.encode()) <= limit:
        return text
    r.pop("environment", None)
    keep = ("model", "type", "seq_len", "ac", "attn", "ep", "cp", "case", "run", "pool")
    r["config"] = {k: v for k, v in r.get("config", {}).items() if k in keep}
    text = compact(r)
    return text if len(text.encode()) <= limit else text.encode()[:limit].decode(errors="ignore")


def write_outputs(result: dict, cfg: BenchConfig | None, is_main: bool = True) -> None:
    if not is_main:
        return
    if cfg is not None and cfg.output:
        d = os.path.dirname(os.path.abspath(cfg.output))
        os.makedirs(d, exist_ok=True)
        with open(cfg.output, "w") as f:
            json.dump(result, f, indent=1, default=str)
    term = os.environ.get("TRAINBENCH_TERMINATION_LOG", c.TERMINATION_LOG)  # override: tests, other runtimes
    if os.path.exists(term):
        try:
            with open(term, "w") as f:
                f.write(for_termination_log(result))
        except OSError:
            pass
    print(c.RESULT_LINE_PREFIX + compact(result), flush=True)


def table(result: dict) -> str:
    m = result.get("metrics") or {}
    cfgd = result["config"]

    def fmt(key, scale=1.0, unit=""):
        s = m.get(key)
        return "n/a" if not s else f"{s['mean'] * scale:.4g}{unit} ± {s['std'] * scale:.2g}"

    mem = result.get("peak_memory_gib")
    rows = [
        ("model", f"{cfgd['model']} ({cfgd.get('hf_name', '')})"),
        (
            "type / seq",
            f"{cfgd['type']} / {cfgd['seq_len']} x {cfgd['batch_size']} seqs x {result['world_size']} ranks",
        ),
        ("impl / attn / ac", f"{result.get('impl')} / {result.get('attn_backend')} / {result.get('ac')}"),
        ("device", f"{result['environment'].get('gpu_name') or 'cpu'} x {result['world_size']}"),
        ("MFU", fmt("mfu", 1, "%") + f"  (peak {result['peak_flops'] / 1e12:.4g} TF, {result['peak_flops_source']})"),
        ("TPS", fmt("tps", 1, " tok/s")),
        ("step time", fmt("step_time", 1, " s")),
        ("peak memory", "n/a" if mem is None else f"{mem:.2f} GiB"),
        ("power", fmt("power_w", 1, " W") if result.get("power_w") else "n/a"),
        ("energy", "n/a" if result.get("energy_j") is None else f"{result['energy_j']:.1f} J"),
        ("loss first -> last", f"{result['losses'][0]:.4f} -> {result['losses'][-1]:.4f}"),
    ]
    if result.get("power_w"):
        m = dict(m, power_w=result["power_w"])
        rows[8] = ("power", fmt("power_w", 1, " W"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


# --- the run ---------------------------------------------------------------------------------------------------


def dry_run(cfg: BenchConfig, spec: ModelSpec, device, world_size: int) -> dict:
    import torch

    from trainbench.trainer.models.base import resolve_dtype
    from trainbench.trainer.models.hf import build_model

    model = build_model(spec, torch.device("meta"), resolve_dtype(cfg.dtype, device))
    n_params = sum(p.numel() for p in model.parameters())
    peak, source = resolve_peak(cfg, device)
    res = base_result(cfg, spec, world_size)
    res.update(
        status="dry-run",
        n_active=spec.n_active(),
        n_params=n_params,
        n_adapter=spec.lora_params(cfg.effective_lora_rank, tuple(cfg.lora_targets)) if cfg.is_lora else 0,
        flops_per_token=spec.flops_per_token(cfg.seq_len, cfg.effective_lora_rank, tuple(cfg.lora_targets)),
        peak_flops=peak,
        peak_flops_source=source,
        tokens_per_step=cfg.batch_size * cfg.seq_len * world_size // cfg.cp,
        device=str(device),
        model_config=spec.config,
    )
    from trainbench.trainer.parallel import plan_layout

    res["parallel"] = plan_layout(cfg, spec, world_size)
    return res


def run_bench(cfg: BenchConfig) -> dict:
    """Run one case in this process (one rank) and return the result dict (see the module doc)."""
    result, exporter = _run(cfg)
    if exporter is not None:
        exporter.close()
    return result


def _run(cfg: BenchConfig):
    """run_bench, returning (result, exporter) with the exporter still serving (state done) on rank 0."""
    from trainbench.trainer import distributed as dist_mod

    warnings.filterwarnings("ignore", category=FutureWarning)
    world = dist_mod.env_world()
    try:
        spec = resolve_model(cfg.model)
    except UnknownModelError as e:
        raise BadConfig(str(e)) from None
    device = pick_device(cfg, world.local_rank)
    check_model(cfg, spec, world.size)
    if cfg.dry_run:
        return dry_run(cfg, spec, device, world.size), None

    peak, peak_source = resolve_peak(cfg, device)
    fpt = spec.flops_per_token(cfg.seq_len, cfg.effective_lora_rank, tuple(cfg.lora_targets))
    exporter = None
    if world.is_main and cfg.metrics_port >= 0:
        from trainbench.trainer.metrics import Exporter

        exporter = Exporter({"run": cfg.run, "case": cfg.case, "model": spec.name, "type": cfg.type, "pool": cfg.pool})
        port = exporter.serve(cfg.metrics_port)
        print(METRICS_PORT_PREFIX + str(port), flush=True)
    try:
        result = _dispatch(cfg, spec, device, world, peak, peak_source, fpt, exporter)
    except BaseException:
        if exporter is not None:
            exporter.set_state("failed")
            exporter.close()
        dist_mod.shutdown()
        raise
    if exporter is not None:
        exporter.set_state("done")
    dist_mod.shutdown()
    return result, exporter


def _dispatch(cfg, spec, device, world, peak, peak_source, fpt, exporter) -> dict:
    """The case by --type: training (below), generate.py, verify.py; --micro-batch auto first (autobatch.py)."""
    if cfg.type == "generate":
        from trainbench.trainer.generate import run_generate

        return run_generate(cfg, spec, device, world, peak, peak_source, exporter)
    if cfg.type == "verify":
        from trainbench.trainer.verify import run_verify

        return run_verify(cfg, spec, device, world, peak, peak_source, exporter)
    found = None
    if cfg.micro_batch_auto:
        from trainbench.trainer.autobatch import resolve_auto

        cfg, found = resolve_auto(cfg, spec, device, world, exporter)
    result = _train(cfg, spec, device, world, peak, peak_source, fpt, exporter)
    if found is not None:
        result["autobatch"] = found
    return result


def type_table(result: dict) -> str:
    kind = (result.get("config") or {}).get("type")
    if kind == "generate":
        from trainbench.trainer.generate import table as gen_table

        return gen_table(result)
    if kind == "verify":
        from trainbench.trainer.verify import table as ver_table

        return ver_table(result)
    text = table(result)
    if result.get("autobatch"):
        a = result["autobatch"]
        text += f"\nmicro-batch auto: {a['micro_batch']} (found in {a['discovery_s']:.1f} s, cached: {a['cached']})"
    return text


def _make_loss_module(impl, cfg: BenchConfig):
    import torch

    from trainbench.trainer import losses

    class LossModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = impl.module

        def forward(self, batch, normalizer):
            h = impl.hidden_states(batch)
            w = impl.lm_head_weight
            if cfg.type == "sft-full":
                return losses.sft_loss(h, w, batch.targets, batch.loss_mask, cfg.loss_chunk, normalizer), None
            return losses.rl_loss(
                h,
                w,
                batch.targets,
                batch.loss_mask,
                batch.inference_logprobs,
                batch.advantages,
                cfg.loss_chunk,
                cfg.ratio_low,
                cfg.ratio_high,
                normalizer,
            )

    return LossModule()


def _train(cfg, spec, device, world, peak, peak_source, fpt, exporter) -> dict:
    import contextlib

    import torch

    from trainbench.trainer import distributed as dist_mod
    from trainbench.trainer.data import make_batches
    from trainbench.trainer.lora import adapter_params
    from trainbench.trainer.models import build_impl
    from trainbench.trainer.power import open_meter

    dist_mod.init(world, device)
    torch.manual_seed(cfg.seed)
    t_build = time.perf_counter()
    from trainbench.trainer.parallel import get_layout

    layout = get_layout(cfg, world, device)  # --cp / --ep process groups (parallel/)
    impl = build_impl(cfg, spec, device)
    if world.is_main:
        print(
            f"built {spec.name} ({impl.name}, attn {impl.attn_backend}, ac {impl.ac}) on {device} "
            f"in {time.perf_counter() - t_build:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    loss_module = _make_loss_module(impl, cfg)
    n_train = impl.n_trainable()
    static_bytes = impl.n_params() * 2 + n_train * 6
    dp = dist_mod.choose_dp(cfg.dp, world, device, list(getattr(impl, "blocks", []) or []), static_bytes)
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
    opt_kw = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0, **opt_kw)
    batches = [layout.shard(b.to(device)) for b in make_batches(cfg, spec, cfg.seed + 1000 * layout.data_rank)]
    accum = cfg.grad_accum
    total_steps = cfg.warmup_steps + cfg.steps
    tokens_per_step = cfg.batch_size * cfg.seq_len * layout.data_ranks  # a CP group trains on one sequence
    meter = open_meter(device.type, device.index or 0, hip=bool(getattr(torch.version, "hip", None)))
    is_cuda = device.type == "cuda"

    info = {
        "impl": impl.name,
        "attn": impl.attn_backend,
        "ac": impl.ac,
        "seq_len": cfg.seq_len,
        "world_size": world.size,
        "data_parallel": dp or "none",
        "cp": cfg.cp,
        "ep": cfg.ep,
        "flops_per_token": fpt,
        "peak_flops": peak,
    }
    if exporter is not None:
        exporter.set_info(info)
        exporter.steps_total.set(total_steps)

    def sync():
        if is_cuda:
            torch.cuda.synchronize(device)

    records, losses_list, kept_list, power_samples = [], [], [], []
    energy_start = None
    sync()
    for step in range(1, total_steps + 1):
        warm = step <= cfg.warmup_steps
        if exporter is not None:
            exporter.set_state("warmup" if warm else "measuring")
        if not warm and energy_start is None and meter is not None:
            sync()
            energy_start = meter.energy_j()
        micro = [batches[((step - 1) * accum + i) % len(batches)] for i in range(accum)]
        normalizer = float(sum(layout.loss_tokens(b) for b in micro)) or 1.0
        sync()
        t0 = time.perf_counter()
        step_loss = torch.zeros((), device=device, dtype=torch.float32)
        step_kept = []
        for i, batch in enumerate(micro):
            last = i == accum - 1
            if dp == "fsdp":
                step_module.set_requires_gradient_sync(last)
            no_sync = step_module.no_sync() if (dp == "ddp" and not last) else contextlib.nullcontext()
            with no_sync, impl.context():
                loss, kept = step_module(batch, normalizer)
                (loss * layout.grad_scale if layout.cp > 1 else loss).backward()
            step_loss += loss.detach().float()
            if kept is not None:
                step_kept.append(kept)
        layout.after_backward(params)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        loss_value = layout.step_loss(step_loss)
        tps = tokens_per_step / dt
        mfu = mfu_percent(fpt, tps, peak, world.size)
        power = meter.power_w() if meter is not None else None
        if power is not None and world.distributed:
            power = dist_mod.reduce_scalar(power, "sum", world, device)
        rec = {"step": step, "step_time": dt, "tps": tps, "mfu": mfu, "loss": loss_value, "warmup": warm}
        if step_kept:
            rec["kept_fraction"] = float(torch.stack(step_kept).mean())
            if not warm:
                kept_list.append(rec["kept_fraction"])
        if power is not None:
            rec["power_w"] = power
            if not warm:
                power_samples.append(power)
        records.append(rec)
        losses_list.append(loss_value)
        if world.is_main:  # progress on stderr (stdout's last line is the result)
            print(
                f"step {step}/{total_steps}{' (warm-up)' if warm else ''}: {dt:.3f} s, {tps:.4g} tok/s, "
                f"MFU {mfu:.2f}%, loss {loss_value:.4f}",
                file=sys.stderr,
                flush=True,
            )
        if exporter is not None:
            exporter.step.set(step)
            exporter.step_time.set(dt)
            exporter.tps.set(tps)
            exporter.mfu.set(mfu)
            exporter.loss.set(loss_value)
            if power is not None:
                exporter.power.set(power)
            if is_cuda:
                exporter.peak_memory.set(torch.cuda.max_memory_reserved(device))
            if energy_start is not None:
                exporter.energy.set(meter.energy_j() - energy_start)
        if not math.isfinite(loss_value):
            raise RuntimeError(f"loss is {loss_value} at step {step}")

    energy = None
    if meter is not None and energy_start is not None:
        energy = dist_mod.reduce_scalar(meter.energy_j() - energy_start, "sum", world, device)
    peak_mem = None
    if is_cuda:
        peak_mem = dist_mod.reduce_scalar(float(torch.cuda.max_memory_reserved(device)), "max", world, device)
        if exporter is not None:
            exporter.peak_memory.set(peak_mem)
            if energy is not None:
                exporter.energy.set(energy)

    replica_spread = None
    if dp == "ddp":  # data parallel must keep the replicas identical: check it, cheaply
        with torch.no_grad():
            checksum = float(sum(p.double().sum() for p in layout.replicated(params)))
        hi = dist_mod.reduce_scalar(checksum, "max", world, device)
        lo = -dist_mod.reduce_scalar(-checksum, "max", world, device)
        replica_spread = hi - lo

    measured = [r for r in records if not r["warmup"]]
    measured_tokens = tokens_per_step * len(measured)
    result = base_result(cfg, spec, world.size)
    env = environment(device)
    if meter is not None:
        env["driver"] = meter.driver()
    result.update(
        impl=impl.name,
        attn_backend=impl.attn_backend,
        ac=impl.ac,
        flops_per_token=fpt,
        peak_flops=peak,
        peak_flops_source=peak_source,
        tokens_per_step=tokens_per_step,
        n_active=spec.n_active(),
        n_trainable=impl.n_trainable(),
        n_adapter=adapter_params(impl.module) if cfg.is_lora else 0,
        metrics={k: summary([r[k] for r in measured]) for k in c.SUMMARY_METRICS},
        peak_memory_gib=None if peak_mem is None else peak_mem / 2**30,
        power_w=summary(power_samples),
        energy_j=energy,
        tokens_per_joule=(measured_tokens / energy) if energy else None,
        kept_fraction=summary(kept_list),
        replica_spread=replica_spread,
        data_parallel=dp,
        parallel=layout.info(),
        # the first step's wall time (compile, autotuning, cold caches): top-level so that it survives the
        # termination log's trimming of the per-step list
        first_step_s=records[0]["step_time"] if records else None,
        losses=losses_list,
        steps=records,
        environment=env,
    )
    return result


# --- entry point -------------------------------------------------------------------------------------------------


def failed_result(cfg: BenchConfig | None, reason: str, message: str) -> dict:
    from trainbench.trainer.distributed import env_world

    res = (
        base_result(cfg, None, env_world().size)
        if cfg
        else {"schema": c.RESULT_SCHEMA, "config": None, "world_size": env_world().size}
    )
    res["status"] = "failed"
    res["error"] = {"reason": reason, "message": message}
    return res


def main(argv: list[str] | None = None) -> int:
    from trainbench.trainer.distributed import env_world

    is_main = env_world().rank == 0
    cfg = None
    exporter = None
    try:
        cfg = parse_args(argv)
        result, exporter = _run(cfg)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        if isinstance(exc, KeyboardInterrupt):
            raise
        kind = classify_error(exc)
        if kind is None:
            raise
        code, reason, message = kind
        print(f"trainbench bench: {reason}: {message}", file=sys.stderr, flush=True)
        write_outputs(failed_result(cfg, reason, message), cfg, is_main)
        return code
    if is_main:
        if result.get("status") == "dry-run":
            print(json.dumps({k: v for k, v in result.items() if k != "schema"}, indent=1, default=str))
        else:
            print(type_table(result), flush=True)
    write_outputs(result, cfg, is_main)
    if exporter is not None:
        if cfg.linger > 0:
            time.sleep(cfg.linger)
        exporter.close()
    return c.EXIT_OK
