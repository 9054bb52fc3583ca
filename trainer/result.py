"""The result of a bench job, shared by every type (train.py, generate.py, verify.py, autobatch.py) and the entry:

- the schema's common part (`base_result`, `environment`, `failed_result`) and the summaries in it (`summary`,
  `mfu_percent`);
- which failures bench mode reports cleanly, with which exit code (`classify_error`, codes in contract.py);
- the outputs: `--output` file, /dev/termination-log within 4 KiB (`for_termination_log`, `slim_for_log`) and the
  last stdout line `TRAINBENCH_RESULT <json>` (`write_outputs`);
- the training table printed after a run (`train_table`; generate.py and verify.py have their own `table`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import statistics

import torch

from trainbench.trainer import contract as c
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.distributed import env_world
from trainbench.trainer.hardware import UnknownDeviceError
from trainbench.trainer.specs import ModelSpec, UnknownModelError

TERMINATION_LOG_LIMIT = 4096


# --- summaries ---------------------------------------------------------------------------------------------------


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


# --- errors --------------------------------------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    low = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in low or "can't allocate memory" in low)
    )


def classify_error(exc: BaseException) -> tuple[int, str, str] | None:
    """(exit code, reason, one-line message) for the failures bench mode reports cleanly; None otherwise."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (BadConfig, UnknownModelError, UnknownDeviceError)):
        return c.EXIT_BAD_CONFIG, c.EXIT_REASONS[c.EXIT_BAD_CONFIG], msg
    if is_oom(exc):
        return c.EXIT_OOM, c.EXIT_REASONS[c.EXIT_OOM], msg[:500]
    if isinstance(exc, RuntimeError) and "no available kernel" in msg.lower():
        return c.EXIT_BAD_CONFIG, c.EXIT_REASONS[c.EXIT_BAD_CONFIG], "attention backend cannot run: " + msg[:400]
    return None


# --- the schema ------------------------------------------------------------------------------------------------------


# what the image says about itself (images/*/Dockerfile: the OCI labels revision/created/... as environment)
IMAGE_ENV = {
    "image_revision": "TRAINBENCH_IMAGE_REVISION",
    "image_created": "TRAINBENCH_IMAGE_CREATED",
    "image_version": "TRAINBENCH_IMAGE_VERSION",
    "image_title": "TRAINBENCH_IMAGE_TITLE",
}
# the environment keys a 4 KiB termination message keeps when the rest of the environment does not fit
PROVENANCE_KEYS = ("image_revision", "image_created", "node", "torch", "cuda", "driver")


def _versions() -> dict:
    out: dict = {"cudnn": None, "nccl": None}
    with contextlib.suppress(Exception):
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        if torch.cuda.is_available() and hasattr(torch.cuda, "nccl"):
            v = torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:
        pass
    return out


def environment(device) -> dict:
    """What ran: host and node, the image (its revision and build date), library versions, the GPU, its driver,
    clocks and power limit (health.snapshot)."""
    env = {
        "hostname": socket.gethostname(),
        "node": os.environ.get("NODE_NAME") or None,  # the Kubernetes node (the Job's downward API)
        "gpu_name": None,
        "gpu_count": 0,
        "driver": None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "python": platform.python_version(),
        **_versions(),
    }
    for key, var in IMAGE_ENV.items():
        env[key] = os.environ.get(var) or None
    for pkg, mod in (("transformers", "transformers"), ("peft", "peft"), ("flash_attn", "flash_attn")):
        try:
            env[pkg] = __import__(mod).__version__
        except Exception:
            env[pkg] = None
    if device.type == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(device)
        env["gpu_count"] = torch.cuda.device_count()
        try:
            from trainbench.trainer.health import snapshot

            gpu = snapshot(device.index or 0).get("gpu") or {}
            for key in ("sm_clock_max_mhz", "mem_clock_max_mhz", "power_limit_w"):
                env[key] = gpu.get(key)
        except Exception:
            pass
    return env


def base_result(cfg: JobConfig, spec: ModelSpec | None, world_size: int) -> dict:
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


def failed_result(cfg: JobConfig | None, reason: str, message: str) -> dict:
    size = env_world().size
    res = base_result(cfg, None, size) if cfg else {"schema": c.RESULT_SCHEMA, "config": None, "world_size": size}
    res["status"] = "failed"
    res["error"] = {"reason": reason, "message": message}
    return res


# --- output --------------------------------------------------------------------------------------------------------


def compact(result: dict) -> str:
    return json.dumps(result, separators=(",", ":"), default=str)


def for_termination_log(result: dict, limit: int = TERMINATION_LOG_LIMIT) -> str:
    """The result JSON within `limit` bytes: per-step lists go first, then the environment, then config detail."""
    text = compact(result)
    if len(text.encode()) <= limit:
        return text
    r = slim_for_log({k: v for k, v in result.items() if k not in ("steps", "losses")})
    r["truncated"] = True
    text = compact(r)
    if len(text.encode()) <= limit:
        return text
    env = r.pop("environment", None) or {}
    kept = {k: env[k] for k in PROVENANCE_KEYS if env.get(k) is not None}
    if kept:  # what ran (the image's commit above all) outlives the rest of the environment
        r["environment"] = kept
    keep = ("model", "type", "seq_len", "ac", "attn", "ep", "cp", "case", "run", "pool")
    r["config"] = {k: v for k, v in r.get("config", {}).items() if k in keep}
    text = compact(r)
    return text if len(text.encode()) <= limit else text.encode()[:limit].decode(errors="ignore")


def _round(x, digits: int = 5):
    if isinstance(x, float):
        return float(f"{x:.{digits}g}")
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v, digits) for v in x]
    return x


def slim_for_log(result: dict) -> dict:
    """The generate/verify blocks of a result without per-prompt detail and spreads, numbers to 5 significant
    digits (the 4 KiB termination message)."""
    r = dict(result)
    if isinstance(r.get("verify"), dict):
        v = dict(r["verify"])
        v["cycles"] = [
            {
                "cycle": cy.get("cycle"),
                "kept": cy.get("kept"),
                "score": {k: cy["score"][k] for k in ("samples", "compile_rate", "pass_rate", "pass_at_k")},
            }
            for cy in v.get("cycles") or []
        ]
        r["verify"] = _round(v)
    if isinstance(r.get("generate"), dict):
        g = dict(r["generate"])
        g["batches"] = [
            {k: ({"mean": x["mean"]} if isinstance(x, dict) and "mean" in x else x) for k, x in b.items()}
            for b in g.get("batches") or []
        ]
        r["generate"] = _round(g)
    return r


def write_outputs(result: dict, cfg: JobConfig | None, is_main: bool = True, line: bool | None = None) -> None:
    """The --output file, the termination message and, with --json (`line`; default cfg.json_line), the
    `TRAINBENCH_RESULT <json>` line on stdout."""
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
    if line is None:
        line = bool(cfg is not None and cfg.json_line)
    if line:
        print(c.RESULT_LINE_PREFIX + compact(result), flush=True)


# --- the training table -------------------------------------------------------------------------------------------


def train_table(result: dict) -> str:
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
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    if result.get("autobatch"):
        a = result["autobatch"]
        text += f"\nmicro-batch auto: {a['micro_batch']} (found in {a['discovery_s']:.1f} s, cached: {a['cached']})"
    return text
