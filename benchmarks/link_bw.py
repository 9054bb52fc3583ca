"""All-reduce and all-gather bus bandwidth between the GPUs of one host (torchrun, one process per GPU).

    torchrun --standalone --nproc-per-node 2 benchmarks/link_bw.py

Bus bandwidth as nccl-tests reports it: all-reduce 2(n-1)/n x bytes / time, all-gather (n-1)/n x bytes / time.
"""

import os
import time

import torch
import torch.distributed as dist


def timed(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", rank))
    n = dist.get_world_size()
    x = torch.ones(512 * 2**20, dtype=torch.bfloat16, device="cuda")  # 1 GiB
    out = torch.empty(n * x.numel(), dtype=x.dtype, device="cuda")
    ar = timed(lambda: dist.all_reduce(x))
    ag = timed(lambda: dist.all_gather_into_tensor(out, x))
    gb = x.numel() * 2 / 1e9
    if rank == 0:
        print(f"all-reduce 1 GiB: {ar * 1e3:.1f} ms, bus {2 * (n - 1) / n * gb / ar:.0f} GB/s")
        print(f"all-gather 1 GiB per rank: {ag * 1e3:.1f} ms, bus {(n - 1) * gb / ag:.0f} GB/s")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
