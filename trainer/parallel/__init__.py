"""Context and expert parallelism (`--cp`, `--ep`) on top of the data parallelism of `distributed.py`.

Rank layout (world = dp x cp, or dp x ep; contiguous ranks form one CP or EP group, so a group sits on one
node's NVLink first):

- `--cp N` (`cp.py`): the N ranks of a CP group train on the SAME packed sequences; each holds T/N tokens of
  every sequence (zigzag split: 2N chunks, rank i keeps chunks i and 2N-1-i, so causal attention work is
  balanced). Attention gathers the whole sequence's keys and values from the group (autograd-aware
  all-gather); documents and position ids are those of the full sequence. The loss of each rank is its tokens'
  sum divided by the sequence's (global) loss-token count; the gradient is scaled by N so that the data-parallel
  average over all ranks (DDP or FSDP2 over the world) sums over the CP group and averages over the DP replicas.
- `--ep N` (`ep.py`, `models/moe.py`): each rank has its own data; the experts of every MoE layer are split
  over the N ranks of an EP group and tokens travel to their experts and back by autograd-aware all-to-all.
  Non-expert parameters are replicated (DDP over the world, expert parameters excluded); expert gradients are
  summed over the DP replicas of their shard (ranks with the same EP index) and divided by the world size.

Modules: `layout.py` (torch-free: `validate()` refuses the combinations that cannot run with BadConfig, the
operator runs it at plan time; `plan_layout()` is the dry run's plan), `mesh.py` (`get_layout()`: the process
groups and the `Layout` the training loop uses), `cp.py`, `ep.py` (the collectives; `ep.is_expert_param` marks the
parameters EP shards). No module here imports a model: models import the layer they use.

This __init__ stays torch-free (the operator imports `parallel.layout`).
"""

from __future__ import annotations

from trainbench.trainer.parallel.layout import plan_layout, validate

__all__ = ["plan_layout", "validate"]
