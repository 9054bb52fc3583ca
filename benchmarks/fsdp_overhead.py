"""What FSDP2 costs without any communication: the trainer's own steps on one device, plain against the same model
wrapped in FSDP2 (each block, then the root: `distributed.wrap_fsdp`) over a one-rank mesh.

On one rank FSDP2's all-gathers and reduce-scatters move nothing between devices, so a slower wrapped run is
FSDP2's own per-step work: its hooks around each block, the copies into and out of its flat buffers, the fp32
gradient reduce. Issue 18 asks why FSDP2 at Qwen3-0.6B/8k ran no faster on two H200s than one GPU (0.198 vs
0.099 s per step): this separates that cost from the link's.

Each variant is a fresh `python -m trainbench.trainer`-equivalent process (the trainer's `bench.main` with the
given arguments); the wrapped ones start a one-rank process group (NCCL on a GPU, gloo on the CPU) and force
`--dp fsdp`, which the trainer otherwise applies only with several processes.

    python3 benchmarks/fsdp_overhead.py -- --model qwen3-0.6b --type sft-full --seq-len 8192 --steps 5 --warmup-steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {  # name -> environment for the child
    "plain": {},
    "fsdp2": {"FSDP_OVERHEAD_WRAP": "1"},
    "fsdp2, no reshard after forward": {"FSDP_OVERHEAD_WRAP": "1", "TRAINBENCH_FSDP_RESHARD": "0"},
    "fsdp2, reduce in bf16": {"FSDP_OVERHEAD_WRAP": "1", "TRAINBENCH_FSDP_REDUCE": "param"},
}


def child(argv: list[str]) -> int:
    """Run the trainer in this process; with FSDP_OVERHEAD_WRAP, under FSDP2 on a one-rank mesh."""
    if os.environ.get("FSDP_OVERHEAD_WRAP"):
        import torch
        import torch.distributed as dist

        from trainbench.trainer import distributed as dist_mod

        if torch.cuda.is_available():
            torch.cuda.set_device(0)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)
        dist_mod.choose_dp = lambda *a, **k: "fsdp"  # the trainer's own wrap, on one rank
    from trainbench.trainer.bench import main

    return main(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", help=f"variants to run (repeatable; default all: {', '.join(VARIANTS)})")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per process")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("trainer_args", nargs=argparse.REMAINDER, help="after --: the trainer's arguments")
    a = p.parse_args()
    args = a.trainer_args[1:] if a.trainer_args[:1] == ["--"] else a.trainer_args
    if a.child:
        return child(args)
    unknown = sorted(set(a.only or []) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.only or VARIANTS:
            out = Path(tmp) / f"{len(rows)}.json"
            env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), **VARIANTS[name])
            cmd = [sys.executable, __file__, "--child", "--", *args, "--metrics-port", "-1", "--output", str(out)]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                rows.append((name, None, f"over --timeout {a.timeout:g} s"))
                continue
            if proc.returncode != 0 or not out.exists():
                rows.append((name, None, f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"))
                continue
            rows.append((name, json.loads(out.read_text()), ""))
    print("| variant | data parallel | step (s, mean / min) | TPS | MFU | peak GiB | vs plain (mean) |")
    print("|---|---|---|---|---|---|---|")
    plain = None
    failed = 0
    for name, r, why in rows:
        if r is None:
            failed += 1
            print(f"| {name} | failed: {why} | | | | | |")
            continue
        m = r.get("metrics") or {}
        step, fastest = (m.get("step_time") or {}).get("mean"), (m.get("step_time") or {}).get("min")
        tps = (m.get("tps") or {}).get("mean")
        mfu = (m.get("mfu") or {}).get("mean")  # percent
        peak = r.get("peak_memory_gib")
        if name == "plain":
            plain = step
        ratio = f"{plain / step:.2f}x" if plain and step else ""
        mfu_s = f"{mfu:.1f}%" if mfu is not None else ""
        peak_s = f"{peak:.1f}" if isinstance(peak, (int, float)) else ""
        dp = r.get("data_parallel") or "none"
        print(f"| {name} | {dp} | {step:.4f} / {fastest:.4f} | {tps:,.0f} | {mfu_s} | {peak_s} | {ratio} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
