"""Run-to-run spread of fresh trainer processes, and what the verdict says when the same code runs twice.

    python3 benchmarks/repeat_spread.py                               # the two default rows on one GPU
    python3 benchmarks/repeat_spread.py --device cpu --rows tiny-qwen3:sft-full:256 --repeats 3 --steps 6

For each row, 2 x `--repeats` fresh `python -m trainbench.trainer` processes run interleaved across rows and
between two "runs" A and B of the same code (A1 B1 A2 B2 ... for row 1, then row 2's, then the next round), so a
drift of the machine hits both runs alike. Per row it prints the TPS of every process, the median and the
olympic mean of each run (trainbench's central value: median below 5 repeats, olympic mean from 5), the
run-to-run spread (CV of the processes' means) beside the step-to-step one (mean CV inside a process), and the
verdict of run B against run A by trainbench's own test (operator/results/stats.py: Welch's t-test with the
run-to-run guard band), i.e. what the nightly would say if the same image ran twice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from trainbench.operator.results.stats import Samples, compare

DEFAULT_ROWS = ("qwen3-0.6b:sft-full:8192", "qwen3-0.6b:rl-lora:16384:eager")


def run_once(row: str, args) -> dict:
    model, typ, seq, *flags = row.split(":")
    cmd = [sys.executable, "-m", "trainbench.trainer", "--model", model, "--type", typ, "--seq-len", seq]
    cmd += ["--steps", str(args.steps), "--warmup-steps", str(args.warmup), "--metrics-port", "-1"]
    cmd += ["--device", args.device, "--json"]  # the TRAINBENCH_RESULT line on stdout
    if args.compile and "eager" not in flags:
        cmd.append("--compile")
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "rc": "timeout", "wall": time.time() - t0, "error": f"over {args.timeout}s"}
    wall = time.time() - t0
    line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("TRAINBENCH_RESULT ")), None)
    if p.returncode != 0 or line is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"ok": False, "rc": p.returncode, "wall": wall, "error": " | ".join(tail)}
    res = json.loads(line.split(" ", 1)[1])
    m = res["metrics"]
    return {"ok": True, "wall": wall, "tps": m["tps"], "mfu": m.get("mfu"), "step_time": m.get("step_time")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help="model:type:seq_len[:eager], comma separated (eager: no --compile)",
    )
    ap.add_argument("--repeats", type=int, default=5, help="fresh processes per row and run")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--out", default=None, help="write every process's numbers here (JSON)")
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    got: dict[str, dict[str, list[dict]]] = {r: {"A": [], "B": []} for r in rows}
    for i in range(args.repeats):
        for row in rows:
            for side in ("A", "B"):
                r = run_once(row, args)
                got[row][side].append(r)
                status = f"{r['tps']['mean']:.1f} tok/s" if r["ok"] else f"FAILED rc={r['rc']}: {r['error']}"
                print(f"[{i + 1}/{args.repeats}] {row} {side}: {status} ({r['wall']:.0f}s)", flush=True)
    print()
    print("| row | run | TPS per process | median | olympic/central | run CV | step CV |")
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for row in rows:
        sides = {}
        for side in ("A", "B"):
            ok = [r for r in got[row][side] if r["ok"]]
            s = Samples.of([r["tps"] for r in ok])
            sides[side] = s
            step_cv = statistics.fmean(r["tps"]["std"] / r["tps"]["mean"] for r in ok) if ok else float("nan")
            run_cv = (s.run_std / s.value) if s.run_std and s.value else float("nan")
            med = statistics.median(s.means) if s.means else float("nan")
            vals = " ".join(f"{v:.0f}" for v in s.means)
            print(
                f"| {row} | {side} | {vals} | {med:.0f} | {s.value or float('nan'):.0f} | {run_cv:.1%} | {step_cv:.1%} |"
            )
        c = compare(sides["B"], sides["A"])
        verdicts.append((row, c))
    print()
    for row, c in verdicts:
        if c.change_pct is None:
            print(f"{row}: no comparison (a run has no successful process)")
            continue
        word = "SIGNIFICANT change" if c.significant else "no significant change"
        print(
            f"{row}: B vs A {c.change_pct:+.1f}% (p={c.p_value:.3f}, guard band {c.noise_pct:.1f}%, {c.method}) -> {word}"
        )
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "runs": got, "verdicts": {r: c.to_dict() for r, c in verdicts}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
