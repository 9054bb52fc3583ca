"""Pieces of context and expert parallelism that need no process group: the zigzag split, the document runs,
the fast MoE model against transformers' Qwen3Moe, expert sharding of a state dict, and the BadConfig checks."""

from __future__ import annotations

import pytest
import torch

from trainbench.trainer import contract as c
from trainbench.trainer.bench import main
from trainbench.trainer.config import BadConfig, parse_args
from trainbench.trainer.data import make_batch
from trainbench.trainer.models.moe import Experts, SparseMoeBlock
from trainbench.trainer.models.qwen3_fast import FastCausalLM
from trainbench.trainer.parallel import plan_layout, validate
from trainbench.trainer.parallel.cp import local_positions, segments_for
from trainbench.trainer.parallel.ep import EPGroup
from trainbench.trainer.specs import resolve_model


def test_zigzag_split_balances_causal_work():
    t, n = 64, 4
    parts = [local_positions(t, r, n) for r in range(n)]
    assert sorted(torch.cat(parts).tolist()) == list(range(t))  # every token exactly once
    work = [int((p + 1).sum()) for p in parts]  # causal attention cost of a query ~ its position
    assert max(work) == min(work)
    assert parts[0].tolist() == [*range(0, 8), *range(56, 64)]


def test_segments_cut_at_documents_and_chunks():
    # one row of 16 tokens, documents [0, 5) [5, 16); rank 0 of 2 holds [0, 4) and [12, 16)
    idx = local_positions(16, 0, 2).tolist()
    assert segments_for([0, 5, 16], idx) == [(0, 4, 0, 4), (4, 4, 5, 16)]
    # rank 1 holds [4, 12): cut at the document bound 5
    idx = local_positions(16, 1, 2).tolist()
    assert segments_for([0, 5, 16], idx) == [(0, 1, 0, 5), (1, 7, 5, 12)]


def hf_moe(seed=0):
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = resolve_model("tiny-qwen3-moe")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec.config), attn_implementation="sdpa").float()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
            elif n.endswith("mlp.gate.weight"):
                p.normal_(0.0, 0.5)  # a router that prefers some experts
    return spec, model


def test_fast_moe_matches_transformers_per_document():
    spec, hf = hf_moe()
    fast = FastCausalLM(spec.config)
    fast.load_state_dict(hf.state_dict(), strict=True)
    _, hf2 = hf_moe(seed=1)
    hf2.load_state_dict(fast.state_dict(), strict=True)  # and back
    assert isinstance(fast.model.layers[0].mlp, SparseMoeBlock)
    batch = make_batch(2, 96, 3, spec.vocab, torch.Generator().manual_seed(1))
    flat, cu = batch.input_ids.reshape(-1), batch.cu_seqlens.tolist()
    ids = torch.tensor([0, 1])
    with torch.no_grad():
        docs = [hf.model(input_ids=flat[None, s:e]).last_hidden_state[0] for s, e in zip(cu[:-1], cu[1:], strict=True)]
        ref = hf.lm_head(torch.cat(docs))
        out = fast(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen)
        # several experts are really used (the check is not vacuous)
        h = torch.randn(64, spec.hidden)
        used = torch.topk(torch.softmax(h @ fast.model.layers[0].mlp.gate.weight.t(), -1), 2).indices.unique()
    assert len(used) > 2 and ids.numel() == 2
    assert ((out - ref).norm() / ref.norm()).item() < 2e-5


def test_expert_shard_loads_its_slice():
    spec, hf = hf_moe()
    full = hf.state_dict()
    ex = Experts(spec.config, EPGroup(group=None, rank=1, size=2))
    ex.load_state_dict(
        {k.split("experts.")[1]: v for k, v in full.items() if k.startswith("model.layers.0.mlp.experts.")}
    )
    assert ex.gate_up_proj.shape[0] == 4
    assert torch.equal(ex.gate_up_proj, full["model.layers.0.mlp.experts.gate_up_proj"][4:8])
    assert torch.equal(ex.down_proj, full["model.layers.0.mlp.experts.down_proj"][4:8])


def cfg(*args):
    return parse_args(["--device", "cpu", "--seq-len", "128", *args])


@pytest.mark.parametrize(
    "args,world,match",
    [
        (["--model", "tiny-qwen3-moe", "--ep", "3"], 3, "does not divide the 8 experts"),
        (["--model", "tiny-qwen3-moe", "--ep", "2"], 3, "does not divide the world size 3"),
        (["--model", "tiny-qwen3", "--cp", "2"], 3, "does not divide the world size 3"),
        (["--model", "tiny-qwen3", "--ep", "2"], 2, "needs a mixture-of-experts model"),
        (["--model", "tiny-qwen3", "--cp", "2", "--impl", "hf"], 2, "fast implementation only"),
        (["--model", "tiny-qwen3-moe", "--ep", "2", "--impl", "hf"], 2, "fast implementation only"),
        (["--model", "tiny-qwen3-moe", "--ep", "2", "--cp", "2"], 4, "together are not supported"),
        (["--model", "tiny-qwen3-moe", "--ep", "2", "--dp", "fsdp"], 2, "--dp fsdp is not supported"),
        (["--model", "tiny-qwen3", "--cp", "3"], 3, "multiple of it"),
        (["--model", "tiny-qwen3", "--cp", "2", "--attn", "fa4"], 2, "no context-parallel form"),
        (["--model", "tiny-qwen3", "--cp", "2", "--attn", "varlen"], 2, "no context-parallel form"),
    ],
)
def test_bad_combinations_are_refused(args, world, match):
    c_ = cfg(*args)
    with pytest.raises(BadConfig, match=match):
        validate(c_, resolve_model(c_.model), world)


def test_bad_combination_exits_with_bad_config(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["--model", "tiny-qwen3", "--cp", "2", "--device", "cpu", "--metrics-port", "-1", "--output", str(out)])
    assert code == c.EXIT_BAD_CONFIG
    assert "does not divide the world size 1" in capsys.readouterr().err


def test_dry_run_plans_eight_gpus(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert (
        main(["--model", "qwen3-30b-a3b", "--ep", "8", "--seq-len", "16384", "--dry-run", "--metrics-port", "-1"]) == 0
    )
    text = capsys.readouterr().out
    assert '"ep group 0: ranks [0, 1, 2, 3, 4, 5, 6, 7]"' in text
    spec = resolve_model("qwen3-30b-a3b")
    plan = plan_layout(cfg("--model", "qwen3-30b-a3b", "--ep", "8"), spec, 8)
    # experts sharded 8 ways: a rank holds the dense part plus 1/8 of the experts
    assert plan["expert_params_per_rank"] * 8 + plan["params_per_rank_replicated"] - plan["expert_params_per_rank"] == (
        spec.n_total()
    )
    plan = plan_layout(cfg("--model", "qwen3-4b", "--cp", "4", "--seq-len", "65536"), resolve_model("qwen3-4b"), 8)
    assert plan["dp"] == 2 and plan["tokens_per_rank_per_micro_batch"] == 16384
    assert plan["memory_gib_per_rank"]["fsdp"]["recompute"] < plan["memory_gib_per_rank"]["ddp"]["recompute"]


def test_auto_ac_under_cp_uses_the_per_rank_plan(monkeypatch):
    """--ac auto with CP counts T/cp tokens per rank: Qwen3-4B LoRA at 64k over CP=4 fits selective AC on an 80 GB
    GPU (one process with all 64k tokens would need full recompute). The device is described, not present."""
    from types import SimpleNamespace

    from trainbench.trainer.models import qwen3_fast

    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 * 10**9))
    gpu = SimpleNamespace(type="cuda")
    spec = resolve_model("qwen3-4b")
    args = ("--model", "qwen3-4b", "--type", "rl-lora", "--seq-len", "65536")
    assert qwen3_fast.choose_ac_parallel(cfg(*args, "--cp", "4"), spec, gpu) == "selective"
    assert qwen3_fast.choose_ac_parallel(cfg(*args, "--cp", "8"), spec, gpu) == "none"  # 8k tokens per rank
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=24 * 10**9))
    assert qwen3_fast.choose_ac_parallel(cfg(*args, "--cp", "4"), spec, gpu) == "recompute"


def test_cp_memory_estimate_keeps_the_gathered_kv_in_every_layer():
    """Under CP the attention keeps the whole sequence's gathered K/V for its backward in every layer (one block's
    under full recompute): the estimate must count it per layer, not once (it said 46 GiB where a run peaked at
    86.5)."""
    from trainbench.trainer.memory import per_rank_gib

    spec = resolve_model("qwen3-4b")
    with_cp = per_rank_gib(
        cfg("--model", "qwen3-4b", "--type", "rl-lora", "--seq-len", "65536", "--cp", "2"), spec, 2, False
    )
    same_tokens = per_rank_gib(cfg("--model", "qwen3-4b", "--type", "rl-lora", "--seq-len", "32768"), spec, 1, False)
    kv_layer_gib = 2 * 65536 * spec.kv_heads * spec.head_dim * 2 / 2**30  # K and V, bf16, all 65,536 tokens
    for mode in ("none", "selective"):
        assert with_cp[mode] - same_tokens[mode] == pytest.approx(spec.layers * kv_layer_gib, abs=0.02)
    assert with_cp["recompute"] - same_tokens["recompute"] == pytest.approx(kv_layer_gib, abs=0.02)
