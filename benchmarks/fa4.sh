#!/bin/sh
# flash-attn-4 on the lent H200 (issue 18, item 3). The CuTe DSL runtime for CUDA 13 is one 92 MB wheel, over
# one device call's 64 MiB, so it travels as a zstd archive of the unpacked wheel (60.8 MiB, split in two parts over two calls) and
# the small wheels in the next, into /tmp on the device, which a warm machine keeps between calls (it replaces the checkout, ignored folders too).
#
# Here (once):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl \
#     flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
#     "apache-tvm-ffi<0.2,>=0.1.11" torch-c-dlpack-ext quack-kernels
#   pip download --no-deps ... nvidia-cutlass-dsl-libs-cu13==4.8.1   # then unzip and: tar c . | zstd -19 --long=30
# On the device:
#   sh benchmarks/fa4.sh stage PART...      # unpack the CUDA 13 libs into .fa4/site (the device has no zstd binary:
#                                           # python's zstandard wheel decompresses; split the archive over calls)
#   sh benchmarks/fa4.sh install WHEELDIR   # unzip the small wheels into .fa4/site (pip --target skips .pth files,
#                                           # which is why `import flash_attn.cute` failed before: `cutlass` lives
#                                           # in nvidia_cutlass_dsl/dsl_packages, put on sys.path by a .pth file)
#   . benchmarks/fa4.sh env                 # PYTHONPATH for the runs
#   sh benchmarks/fa4.sh check              # import, one forward+backward against cuDNN SDPA
set -u
S=${FA4_SITE:-/tmp/fa4/site}  # outside the repository: a warm machine replaces the checkout, ignored folders too
case "${1:-}" in
stage)  # stage PART...: the archive's parts in order (split -b), decompressed with zstd or python's zstandard
  shift; mkdir -p "$S"
  if command -v zstd >/dev/null; then cat "$@" | zstd -dc --long=31 | tar x -C "$S"
  else cat "$@" | python3 -c 'import sys, zstandard; zstandard.ZstdDecompressor(max_window_size=2**31).copy_stream(sys.stdin.buffer, sys.stdout.buffer)' | tar x -C "$S"
  fi && du -sh "$S" ;;
install)
  mkdir -p "$S" && for w in "$2"/*.whl; do python3 -m zipfile -e "$w" "$S" || exit 1; done && ls "$S" ;;
env)
  export PYTHONPATH="$S:$S/nvidia_cutlass_dsl/dsl_packages:$S/nvidia_cutlass_dsl/python_packages:${PYTHONPATH:-}" ;;
check)
  PYTHONPATH="$S:$S/nvidia_cutlass_dsl/dsl_packages:$S/nvidia_cutlass_dsl/python_packages:${PYTHONPATH:-}" python3 - <<'PY'
import time, torch
from flash_attn.cute import flash_attn_varlen_func
import torch.nn.functional as F
torch.manual_seed(0)
T, H, KV, D = 8192, 16, 8, 128
q = torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(T, KV, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(T, KV, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
cu = torch.tensor([0, T], device="cuda", dtype=torch.int32)
t0 = time.time()
o = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=T, max_seqlen_k=T, causal=True)
o = o[0] if isinstance(o, tuple) else o
o.float().square().sum().backward()
torch.cuda.synchronize()
print(f"fa4 first fwd+bwd (JIT compile) {time.time() - t0:.1f} s")
g4 = [t.grad.clone() for t in (q, k, v)]
for t in (q, k, v):
    t.grad = None
r = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                   is_causal=True, enable_gqa=True)[0].transpose(0, 1)
r.float().square().sum().backward()
print("max |out fa4 - sdpa|", (o.float() - r.float()).abs().max().item())
for n, a, t in zip("qkv", g4, (q, k, v)):
    print(f"grad {n} rel err", ((a.float() - t.grad.float()).norm() / t.grad.float().norm()).item())
PY
  ;;
*) echo "usage: $0 stage ARCHIVE | install DIR | env | check" >&2; exit 2 ;;
esac
