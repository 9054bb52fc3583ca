"""Type generate on CPU with a tiny config: independent sampling, EOS handling, cache vs no cache, the byte counts."""

from __future__ import annotations

import pytest
import torch

from trainbench.trainer import generate as G
from trainbench.trainer.config import parse_args
from trainbench.trainer.specs import resolve_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_spec():
    cfg = parse_args(["--type", "generate", "--device", "cpu", "--seq-len", "64"])
    spec = resolve_model("tiny-qwen3")
    torch.manual_seed(0)
    model, _ = G.build_eval_model(cfg, spec, CPU)
    return model, spec


def prompt(spec, batch, length=64, seed=1):
    row = torch.randint(G.FIRST_TOKEN_ID, spec.vocab, (1, length), generator=torch.Generator().manual_seed(seed))
    return row.expand(batch, length).contiguous()


def test_each_row_samples_its_own_tokens(model_spec):
    model, spec = model_spec
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        out = G.decode(model, prompt(spec, 32), 8, eos=[], temperature=1.0, generator=gen)
    first = out.tokens[:, 0]
    # the same prompt in every row: a copied first token would make them all equal
    assert first.unique().numel() > 16
    assert out.tokens.shape == (32, 8) and out.counted == 32 * 8 and out.decode_steps == 7
    # rows stay different after the first token too
    assert len({tuple(r.tolist()) for r in out.tokens}) == 32


def test_tokens_after_eos_are_not_counted(model_spec):
    model, spec = model_spec
    p = torch.randint(G.FIRST_TOKEN_ID, spec.vocab, (6, 32), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        free = G.decode(model, p, 12, eos=[], temperature=0)
    eos = int(free.tokens[0, 1])  # row 0's second greedy token becomes EOS
    with torch.inference_mode():
        out = G.decode(model, p, 12, eos=[eos], temperature=0)
    # each row runs as before until its first EOS (included), then is fed EOS and counts nothing more
    expect = [next((i + 1 for i, t in enumerate(free.tokens[r].tolist()) if t == eos), 12) for r in range(6)]
    assert out.lengths.tolist() == expect
    assert expect[0] <= 2 and out.counted == sum(expect) < 6 * 12
    for r, n in enumerate(expect):
        assert torch.equal(out.tokens[r, :n], free.tokens[r, :n])
        assert out.tokens[r, n:].eq(eos).all()


def test_cache_and_no_cache_give_the_same_greedy_tokens(model_spec):
    model, spec = model_spec
    p = torch.randint(G.FIRST_TOKEN_ID, spec.vocab, (3, 40), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a = G.decode(model, p, 24, eos=[], temperature=0, use_cache=True)
        b = G.decode(model, p, 24, eos=[], temperature=0, use_cache=False)
    assert torch.equal(a.tokens, b.tokens)


def test_byte_and_flop_counts():
    spec = resolve_model("tiny-qwen3")
    # 2 (K,V) x 2 layers x 2 kv heads x 16 dims x 4 bytes
    assert G.kv_bytes_per_token(spec, 4) == 2 * 2 * 2 * 16 * 4
    # one step at context P + 1 for one row: weights once + (P + 1) tokens of K/V
    assert G.decode_bytes(spec, 4, 1, 10, 1) == spec.n_active() * 4 + G.kv_bytes_per_token(spec, 4) * 11
    assert G.decode_bytes(spec, 2, 3, 10, 2) == spec.n_active() * 2 * 2 + G.kv_bytes_per_token(spec, 2) * 3 * (11 + 12)
    head = 64 * 512  # hidden x vocab: the LM head runs once per row, for the last position
    assert G.prefill_flops_per_token(spec, 64) == 2 * (spec.n_active() - head) + 4 * 2 * 4 * 16 * 64 + 2 * head / 64


def test_run_generate_result(tmp_path):
    from trainbench.trainer.bench import run_bench

    cfg = parse_args(
        ["--type", "generate", "--model", "tiny-qwen3", "--seq-len", "64", "--new-tokens", "6", "--steps", "1"]
        + ["--gen-batch-sizes", "1,4", "--device", "cpu", "--metrics-port", "-1"]
    )
    r = run_bench(cfg)
    g = r["generate"]
    assert [b["batch_size"] for b in g["batches"]] == [1, 4] and g["headline_batch_size"] == 4
    b4 = g["batches"][1]
    assert b4["distinct_first_tokens"] > 1 and b4["tokens_generated"] == 24
    for key in ("prefill_tps", "ttft_s", "decode_tps", "prefill_mfu", "decode_bandwidth_pct"):
        assert b4[key]["mean"] > 0, key
    assert r["metrics"]["tps"] == b4["decode_tps"] and r["peak_bandwidth_source"] == "cpu-nominal"
    assert g["no_cache"]["tokens_match"] is True and g["no_cache"]["speedup"] > 0


def test_termination_message_keeps_the_type_blocks_within_4_kib():
    """The operator reads the 4 KiB termination message: generate and verify results stay parseable in it."""
    import json

    from trainbench.trainer.result import for_termination_log, slim_for_log

    s = {"mean": 1.5, "std": 0.1, "min": 1.0, "max": 2.0, "n": 5}
    row = {"batch_size": 8, "error": None, "decode_tps": s, "ttft_s": s, "prefill_tps": s, "distinct_first_tokens": 8}
    prompts = [{"id": f"p{i}", "n": 8, "passed": 1, "pass_at_k": {"1": 0.125}, "outcomes": {"x": 8}} for i in range(16)]
    score = {"samples": 128, "compile_rate": 0.5, "pass_rate": 0.1, "pass_at_k": {"1": 0.1}, "prompts": prompts}
    result = {
        "config": {"model": "m", "type": "verify", "padding": "x" * 1500},
        "generate": {"batches": [row] * 4, "no_cache": None},
        "verify": {"pass_at_k": {"1": 0.1}, "cycles": [{"cycle": i, "kept": 3, "score": score} for i in range(3)]},
        "environment": {"hostname": "h"},
    }
    text = for_termination_log(result)
    assert len(text.encode()) <= 4096
    back = json.loads(text)
    assert back["generate"]["batches"][0]["decode_tps"] == {"mean": 1.5}
    assert back["verify"]["cycles"][2]["score"]["pass_at_k"] == {"1": 0.1}
    assert slim_for_log({"a": 1}) == {"a": 1}


def test_short_prompts_are_allowed_for_generate_only():
    from trainbench.trainer.config import BadConfig

    assert parse_args(["--type", "generate", "--seq-len", "8"]).seq_len == 8
    with pytest.raises(BadConfig):
        parse_args(["--type", "sft-full", "--seq-len", "8"])
    with pytest.raises(BadConfig):
        parse_args(["--type", "generate", "--seq-len", "0"])
