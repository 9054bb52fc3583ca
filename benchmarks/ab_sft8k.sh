#!/bin/sh
# A/B of the fast path's versions on Qwen3-0.6B SFT 8k in one GPU call (docs/performance.md, "A/B").
# Each line is a fresh process; knobs: TRAINBENCH_LM_HEAD=recompute (call-2 LM head), TRAINBENCH_FAST_FUSE=0
# (separate q/k/v and gate/up GEMMs). Both off = the call-2 version.
set -u
OUTDIR=${OUT:-.}
C="python3 benchmarks/compare_hf.py --variants bench --no-check --steps 4 --warmup 2"
R=qwen3-0.6b:sft-full:8192
$C --rows $R --json $OUTDIR/ab_new_first.json
$C --rows qwen3-0.6b:rl-full:65536,$R --json $OUTDIR/ab_new_after64k.json
TRAINBENCH_LM_HEAD=recompute $C --rows $R --json $OUTDIR/ab_recompute.json
TRAINBENCH_FAST_FUSE=0 $C --rows $R --json $OUTDIR/ab_nofuse.json
TRAINBENCH_LM_HEAD=recompute TRAINBENCH_FAST_FUSE=0 $C --rows $R --json $OUTDIR/ab_call2_version.json
