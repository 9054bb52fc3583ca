"""Run under `torchrun --nproc-per-node 2` (gloo): the CP=2 forward/backward of the fast model against the same
model run whole on each rank (SDPA), for CP's SDPA path (native GQA, and kv heads repeated) and its flex path.
Rank 0 writes {variant: {"loss_ref", "loss_cp", "grad_rel": {name: rel. error}}} to argv[1]. Flex has no
backward on the CPU (torch raises), so its variants compare the forward only; on a GPU the backward is flex's own
and the gather's is the one the SDPA variants check."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from trainbench.trainer.data import make_batch
from trainbench.trainer.losses import rl_loss, sft_loss
from trainbench.trainer.models.qwen3_fast import FastCausalLM, init_like_transformers
from trainbench.trainer.parallel.cp import shard_batch
from trainbench.trainer.specs import resolve_model

PARAMS = ("model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight", "model.layers.1.mlp.down_proj.weight")


def loss_of(model, batch, kind, normalizer, cp=None):
    h = model.hidden_states(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen, None, cp)
    w = model.lm_head.weight
    if kind == "sft":
        return sft_loss(h, w, batch.targets, batch.loss_mask, 64, normalizer)
    return rl_loss(h, w, batch.targets, batch.loss_mask, batch.inference_logprobs, batch.advantages, 64,
                   0.125, 8.0, normalizer)[0]  # fmt: skip


def main() -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    spec = resolve_model("tiny-qwen3")
    torch.manual_seed(0)
    model = FastCausalLM(spec.config).float()
    init_like_transformers(model, seed=0)
    with torch.no_grad():  # non-trivial norms, larger weights: attention patterns that are not uniform
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
            elif "proj" in n:
                p.mul_(5)
    batch = make_batch(2, 96, 3, spec.vocab, torch.Generator().manual_seed(7))  # B=2: rows and documents
    out = {}
    variants = {  # expand: kv heads repeated instead of enable_gqa
        "sft": ("sft", "native", "sdpa"),
        "rl": ("rl", "expand", "sdpa"),
        "sft-flex": ("sft", "native", "flex"),
        "rl-flex": ("rl", "native", "flex"),
    }
    for key, (kind, gqa, backend) in variants.items():
        model.gqa = gqa
        n_tokens = float(batch.loss_mask.sum())
        model.zero_grad()
        model.attn_backend = "sdpa"
        ref = loss_of(model, batch, kind, n_tokens)
        ref.backward()
        ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if n in PARAMS}
        model.zero_grad()
        local = shard_batch(batch, rank, size, dist.group.WORLD)
        assert local.input_ids.shape == (2, 96 // size)
        model.attn_backend = backend
        grad = backend != "flex"
        with torch.set_grad_enabled(grad):
            loss = loss_of(model, local, kind, float(local.loss_tokens), local.cp)
        if grad:
            loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        grads = {}
        for n, p in model.named_parameters():
            if n in PARAMS and grad:
                g = p.grad.clone()
                dist.all_reduce(g)  # the CP group's gradients add up to the whole sequence's
                grads[n] = ((g - ref_grads[n]).norm() / ref_grads[n].norm()).item()
        out[key] = {"loss_ref": ref.item(), "loss_cp": total.item(), "grad_rel": grads}
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
