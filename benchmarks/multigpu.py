"""Issue 7's runs on one multi-GPU host: data, context and expert parallelism, each as a real torchrun job.

    python3 benchmarks/multigpu.py                       # the default set (below) on 2 GPUs
    python3 benchmarks/multigpu.py --only 4b-lora-16k-1gpu,4b-lora-16k-2gpu
    python3 benchmarks/multigpu.py --device cpu --tiny   # smoke run on the CPU (gloo, tiny configs)

Every case is `torchrun --standalone --nproc-per-node N -m trainbench.trainer ...` with its own time limit, so
one failing case costs only itself. The table at the end has, per case: world size and layout (dp x cp x ep, the
data-parallel wrapper that ran), attention and AC that ran, the MEDIAN measured step time, global TPS from it,
MFU (trainbench's formula, divided by the world size), the peak memory (max over ranks) and the exit status.
Scaling lines compare a case with its one-GPU twin (`vs`): TPS ratio and scaling efficiency (ratio / GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class Case:
    name: str
    nproc: int
    args: list[str]
    vs: str | None = None  # the one-GPU case this one scales from
    env: dict = field(default_factory=dict)


def reduced_moe_config(path: str, layers: int) -> str:
    """Qwen3-30B-A3B cut to `layers` blocks (all 128 experts kept), written as a config.json the trainer takes."""
    from trainbench.trainer.specs import resolve_model

    cfg = dict(resolve_model("qwen3-30b-a3b").config)
    cfg.update(num_hidden_layers=layers, _name=f"qwen3-30b-a3b-{layers}l", _hf_name="Qwen/Qwen3-30B-A3B")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def default_cases(out: str, steps: int, warmup: int, compile_: bool) -> list[Case]:
    common = ["--steps", str(steps), "--warmup-steps", str(warmup), "--metrics-port", "-1"]
    if compile_:
        common.append("--compile")
    moe = reduced_moe_config(os.path.join(out, "qwen3-30b-a3b-12l.json"), 12)
    lora16 = ["--model", "qwen3-4b", "--type", "rl-lora", "--seq-len", "16384", *common]
    sft8 = ["--model", "qwen3-0.6b", "--type", "sft-full", "--seq-len", "8192", *common]
    sft4b = ["--model", "qwen3-4b", "--type", "sft-full", "--seq-len", "16384", "--ac", "selective", *common]
    return [
        Case("4b-lora-16k-1gpu", 1, lora16),
        Case("4b-lora-16k-2gpu", 2, lora16, vs="4b-lora-16k-1gpu"),
        Case("0.6b-sft-8k-1gpu", 1, sft8),
        Case("4b-sft-16k-1gpu", 1, sft4b),
        Case("4b-sft-16k-2gpu-fsdp", 2, [*sft4b, "--dp", "fsdp"], vs="4b-sft-16k-1gpu"),
        Case("4b-sft-16k-2gpu-ddp", 2, [*sft4b, "--dp", "ddp"], vs="4b-sft-16k-1gpu"),
        Case("0.6b-sft-8k-2gpu-fsdp", 2, [*sft8, "--dp", "fsdp"], vs="0.6b-sft-8k-1gpu"),
        Case("0.6b-sft-8k-2gpu-ddp", 2, [*sft8, "--dp", "ddp"], vs="0.6b-sft-8k-1gpu"),
        Case(
            "0.6b-sft-8k-2gpu-fsdp-bf16reduce",
            2,
            [*sft8, "--dp", "fsdp"],
            vs="0.6b-sft-8k-1gpu",
            env={"TRAINBENCH_FSDP_REDUCE": "param"},
        ),  # fmt: skip
        Case(
            "0.6b-sft-8k-2gpu-fsdp-noreshard",
            2,
            [*sft8, "--dp", "fsdp"],
            vs="0.6b-sft-8k-1gpu",
            env={"TRAINBENCH_FSDP_RESHARD": "0"},
        ),  # fmt: skip
        Case("4b-lora-64k-1gpu", 1, ["--model", "qwen3-4b", "--type", "rl-lora", "--seq-len", "65536", *common]),
        Case(
            "4b-lora-64k-cp2",
            2,
            ["--model", "qwen3-4b", "--type", "rl-lora", "--seq-len", "65536", "--cp", "2", *common],
            vs="4b-lora-64k-1gpu",
        ),  # fmt: skip
        Case(
            "30b-a3b-12l-sft-16k-ep2",
            2,
            ["--model", moe, "--type", "sft-full", "--seq-len", "16384", "--ep", "2", *common],
        ),  # fmt: skip
    ]


def tiny_cases(out: str, steps: int, warmup: int, compile_: bool) -> list[Case]:
    common = ["--steps", str(steps), "--warmup-steps", str(warmup), "--metrics-port", "-1", "--device", "cpu"]
    return [
        Case("tiny-1", 1, ["--model", "tiny-qwen3", "--type", "rl-lora", "--seq-len", "256", *common]),
        Case("tiny-2", 2, ["--model", "tiny-qwen3", "--type", "rl-lora", "--seq-len", "256", *common], vs="tiny-1"),
        Case("tiny-cp2", 2, ["--model", "tiny-qwen3", "--type", "sft-full", "--seq-len", "256", "--cp", "2", *common]),
        Case(
            "tiny-ep2", 2, ["--model", "tiny-qwen3-moe", "--type", "sft-full", "--seq-len", "256", "--ep", "2", *common]
        ),  # fmt: skip
    ]


def run_case(case: Case, out: str, timeout: float) -> dict:
    result_path = os.path.join(out, f"{case.name}.json")
    log_path = os.path.join(out, f"{case.name}.log")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={case.nproc}",
           "-m", "trainbench.trainer", *case.args, "--output", result_path]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **case.env}
    t0 = time.time()
    print(f"== {case.name}: {' '.join(cmd[3:])}", flush=True)
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    row = {"name": case.name, "nproc": case.nproc, "rc": rc, "wall_s": round(time.time() - t0, 1), "vs": case.vs}
    if os.path.exists(result_path):
        with open(result_path) as f:
            row["result"] = json.load(f)
    else:
        with open(log_path) as f:
            row["log_tail"] = f.read()[-1500:]
    print(json.dumps(summarize(row)), flush=True)
    return row


def summarize(row: dict) -> dict:
    r = row.get("result") or {}
    measured = [s for s in r.get("steps") or [] if not s.get("warmup")]
    status = r.get("status", f"rc={row['rc']}")
    if r and row["rc"] != 0:  # a result was written, then the process failed (e.g. an abort at exit)
        status = f"{status}, then rc={row['rc']}"
    s = {"name": row["name"], "status": status, "wall_s": row["wall_s"]}
    if r.get("error"):
        s["error"] = r["error"]
    if measured:
        s["step_s"] = statistics.median(x["step_time"] for x in measured)
        s["tps"] = statistics.median(x["tps"] for x in measured)
        s["mfu"] = statistics.median(x["mfu"] for x in measured)
    par = r.get("parallel") or {}
    s["layout"] = f"{par.get('dp', '?')}x cp{par.get('cp', '?')} x ep{par.get('ep', '?')}"
    s["world"] = r.get("world_size")
    s["dp"] = r.get("data_parallel")
    s["attn"], s["ac"] = r.get("attn_backend"), r.get("ac")
    s["peak_gib"] = r.get("peak_memory_gib")
    s["losses"] = [round(x, 4) for x in (r.get("losses") or [])][:3]
    return s


def earlier(name: str, out: str) -> dict | None:
    """A case's row from an earlier invocation with the same --out (its result JSON), for the scaling lines."""
    path = os.path.join(out, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return {"name": name, "rc": 0, "wall_s": None, "result": json.load(f)}


def table(rows: list[dict], out: str) -> str:
    sums = {row["name"]: summarize(row) for row in rows}
    for row in rows:
        if row["vs"] and row["vs"] not in sums and (old := earlier(row["vs"], out)):
            sums[row["vs"]] = summarize(old)
    lines = ["| case | world | layout | dp | attn / ac | step (s) | TPS | MFU | peak GiB | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in sums.values():
        tps = f"{s['tps'] / 1e3:.2f}k" if "tps" in s else "-"
        mfu = f"{s['mfu']:.1f}%" if "mfu" in s else "-"
        step = f"{s['step_s']:.3f}" if "step_s" in s else "-"
        lines.append(
            f"| {s['name']} | {s['world']} | {s['layout']} | {s['dp']} | {s['attn']} / {s['ac']} | {step} | {tps} "
            f"| {mfu} | {s['peak_gib']} | {s['status']} |"
        )
    for row in rows:
        a, b = sums[row["name"]], sums.get(row["vs"] or "")
        if b and "tps" in a and "tps" in b:
            ratio = a["tps"] / b["tps"]
            lines.append(f"\n{row['name']} vs {row['vs']}: TPS x{ratio:.3f} on {row['nproc']} GPUs "
                         f"(scaling efficiency {100 * ratio / row['nproc']:.1f}%)")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--timeout", type=float, default=240, help="seconds per case")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a smoke run of this script)")
    p.add_argument("--out", default=os.environ.get("OUT", "multigpu-out"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    make = tiny_cases if args.tiny else default_cases
    cases = make(args.out, args.steps, args.warmup, args.compile and not args.tiny)
    if args.only:
        want = args.only.split(",")
        unknown = set(want) - {c.name for c in cases}
        if unknown:
            p.error(f"unknown cases {sorted(unknown)}; choose from {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in want]
    rows = []
    for case in cases:
        rows.append(run_case(case, args.out, args.timeout))
        with open(os.path.join(args.out, "multigpu.json"), "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "result"} | {"summary": summarize(r)} for r in rows], f)
    print(table(rows, args.out), flush=True)
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
