#!/bin/sh
# Issue 18 runs on one H200 (items 1 MoE, 2 generation), each part one 10-minute device call:
#   sh benchmarks/issue18.sh a   # MoE block loop vs grouped; 12-layer Qwen3-30B-A3B rl-lora 16k (cold caches);
#                                # decode variants (eager vs static); the generate case as the trainer runs it
#   sh benchmarks/issue18.sh b   # full Qwen3-30B-A3B rl-lora 16k without and with --compile (the issue's
#                                # command); the generate case again (GEMM attention in the static decoder)
#   sh benchmarks/issue18.sh c   # full Qwen3-30B-A3B rl-lora 16k --compile with one document per sequence
#                                # (cuDNN), whose attention work is what the MFU formula counts
# Logs and result JSON under $OUT; tables on stdout. Run from the repository root with PYTHONPATH=src.
set -u
part=${1:-a}
O=${OUT:-/tmp/issue18}
mkdir -p "$O"
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 - <<'PY'
import json
from trainbench.trainer.specs import resolve_model
cfg = dict(resolve_model("qwen3-30b-a3b").config)
cfg.update(num_hidden_layers=12, _name="qwen3-30b-a3b-12l", _hf_name="Qwen/Qwen3-30B-A3B")
json.dump(cfg, open("/tmp/moe12.json", "w"))
PY
T="python3 -m trainbench.trainer --metrics-port -1 --steps 3 --warmup-steps 2"
steps() { grep -E "^step|first|MFU|mfu|error|Error" "$1" | grep -v "^ " | tail -12 | cut -c1-220; }
if [ "$part" = a ]; then
  timeout 90 python3 benchmarks/moe_gen_bench.py moe 2>&1 | tee "$O/moe_block.log" | tail -8
  timeout 150 $T --model /tmp/moe12.json --type rl-lora --seq-len 16384 --output "$O/moe12_cold.json" \
    >"$O/moe12_cold.log" 2>&1; echo "moe12 cold rc=$?"; steps "$O/moe12_cold.log"
  timeout 120 python3 benchmarks/moe_gen_bench.py gen --reps 2 2>&1 | tee "$O/gen_variants.log" | tail -12
  timeout 100 python3 -m trainbench.trainer --metrics-port -1 --type generate --model qwen3-0.6b --seq-len 512 \
    --new-tokens 128 --output "$O/gen.json" >"$O/gen.log" 2>&1; echo "generate rc=$?"; tail -12 "$O/gen.log"
elif [ "$part" = c ]; then
  timeout 240 $T --model qwen3-30b-a3b --type rl-lora --seq-len 16384 --docs-per-seq 1 --compile --output "$O/moe48_1doc.json" \
    >"$O/moe48_1doc.log" 2>&1; echo "moe48 1doc rc=$?"; steps "$O/moe48_1doc.log"
else
  timeout 150 $T --model qwen3-30b-a3b --type rl-lora --seq-len 16384 --output "$O/moe48.json" \
    >"$O/moe48.log" 2>&1; echo "moe48 rc=$?"; steps "$O/moe48.log"
  timeout 90 python3 -m trainbench.trainer --metrics-port -1 --type generate --model qwen3-0.6b --seq-len 512 \
    --new-tokens 128 --output "$O/gen_mm.json" >"$O/gen_mm.log" 2>&1; echo "generate rc=$?"; tail -9 "$O/gen_mm.log"
  timeout 150 $T --model qwen3-30b-a3b --type rl-lora --seq-len 16384 --compile --output "$O/moe48c.json" \
    >"$O/moe48c.log" 2>&1; echo "moe48 compile rc=$?"; steps "$O/moe48c.log"
fi
