"""Expert parallelism: token dispatch to experts sharded over the ranks of an EP group (all-to-all).

Every rank routes its own tokens (top-k experts each). The (token, expert) pairs are sorted by expert; since
the experts are split into contiguous shards (rank r of the group owns experts r*E/N .. (r+1)*E/N - 1), the
sorted pairs are already grouped by destination rank. The per-expert counts travel first (a small
all-to-all), then the hidden states (the functional collective `all_to_all_single_autograd`, autograd-aware: its
backward sends the gradients back the same way). The receiver regroups what came from each source by local
expert, runs its experts, and the results return by the reverse all-to-all. Without an EP group the same code
runs the local experts directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

EXPERT_ATTR = "_trainbench_expert"  # set on expert parameters: sharded over EP ranks, not replicated


def is_expert_param(p: torch.Tensor) -> bool:
    return getattr(p, EXPERT_ATTR, False)


@dataclass
class EPGroup:
    group: object
    rank: int
    size: int


def dispatch(x_sorted: torch.Tensor, counts: torch.Tensor, n_local: int, ep: EPGroup | None, run_local):
    """x_sorted [M, H]: the routed copies of the tokens, sorted by global expert id; counts [E]: how many per
    expert. `run_local(x, local_counts)` computes the local experts on rows grouped by local expert. Returns the
    experts' outputs in the order of x_sorted."""
    if ep is None or ep.size == 1:
        return run_local(x_sorted, counts)
    from torch.distributed._functional_collectives import all_to_all_single_autograd

    size = ep.size
    recv_counts = torch.empty_like(counts)
    dist.all_to_all_single(recv_counts, counts, group=ep.group)  # [size * n_local]: what each source sends me
    send = counts.view(size, n_local).sum(1).tolist()
    recv_mat = recv_counts.view(size, n_local)
    recv = recv_mat.sum(1).tolist()
    x_recv = all_to_all_single_autograd(x_sorted.contiguous(), recv, send, ep.group)
    # rows arrive grouped by source, then by local expert: regroup by local expert
    local_expert = torch.repeat_interleave(
        torch.arange(n_local, device=counts.device).repeat(size), recv_mat.reshape(-1)
    )
    perm = torch.argsort(local_expert, stable=True)
    y = run_local(x_recv[perm], recv_mat.sum(0))
    y_back = y[torch.argsort(perm)]  # back to the order the rows arrived in
    return all_to_all_single_autograd(y_back.contiguous(), send, recv, ep.group)
