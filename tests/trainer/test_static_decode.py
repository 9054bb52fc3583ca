"""The static-KV-cache decoder (`kernels/static_decode.py`) on the CPU, in float32: the same greedy tokens and
logits as the transformers decode loop (DynamicCache), the same EOS handling, and teacher forcing."""

from __future__ import annotations

import pytest
import torch

from trainbench.trainer import generate as G
from trainbench.trainer.config import BadConfig, parse_args
from trainbench.trainer.kernels.static_decode import StaticDecoder, supports
from trainbench.trainer.specs import resolve_model

CPU = torch.device("cpu")


def build(name):
    cfg = parse_args(["--type", "generate", "--device", "cpu", "--seq-len", "64", "--model", name])
    spec = resolve_model(name)
    torch.manual_seed(0)
    model, _ = G.build_eval_model(cfg, spec, CPU)
    with torch.no_grad():  # norms away from 1 so that a wrong norm shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return model, spec


def prompt(spec, batch, length, seed=1):
    return torch.randint(G.FIRST_TOKEN_ID, spec.vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("attn", ["sdpa", "mm"])
def test_static_decode_equals_the_transformers_loop(name, attn):
    model, spec = build(name)
    assert supports(model) is None
    p = prompt(spec, 3, 37)
    n = 20
    with torch.inference_mode():
        ref = G.decode(model, p, n, eos=[], temperature=0, keep_logits=True)
        dec = StaticDecoder(model, 3, 37 + n, attn=attn)
        out = G.decode_static(dec, p, n, eos=[], temperature=0, keep_logits=True)
        again = G.decode_static(dec, p, n, eos=[], temperature=0)  # the decoder is reusable
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(again.tokens, ref.tokens)
    assert out.decode_steps == ref.decode_steps == n - 1 and out.counted == 3 * n
    agree = G.logit_agreement(torch.stack(ref.logits, 1), torch.stack(out.logits, 1), ref.tokens)
    assert agree["logits_rel_err"] < 1e-5 and agree["top1_agreement"] == 1.0


def test_static_decode_eos_and_teacher_forcing():
    model, spec = build("tiny-qwen3")
    p = prompt(spec, 4, 30, seed=2)
    with torch.inference_mode():
        free = G.decode(model, p, 12, eos=[], temperature=0)
        eos = int(free.tokens[0, 1])
        ref = G.decode(model, p, 12, eos=[eos], temperature=0)
        dec = StaticDecoder(model, 4, 42)
        out = G.decode_static(dec, p, 12, eos=[eos], temperature=0)
        # forced tokens: the logits at each step are those of the forced prefix
        forced = torch.randint(G.FIRST_TOKEN_ID, spec.vocab, (4, 12), generator=torch.Generator().manual_seed(3))
        f = G.decode_static(StaticDecoder(model, 4, 42), p, 12, eos=[], temperature=0, keep_logits=True, force=forced)
        nc = G.nocache_logits(model, p, forced)
    assert torch.equal(out.tokens, ref.tokens) and torch.equal(out.lengths, ref.lengths)
    assert out.lengths[0] <= 2
    assert torch.equal(f.tokens, forced)
    assert G.logit_agreement(nc, torch.stack(f.logits, 1), forced)["logits_rel_err"] < 1e-5


def test_cache_overflow_is_refused():
    model, spec = build("tiny-qwen3")
    dec = StaticDecoder(model, 1, 40)  # rounded up to 64 positions
    with torch.inference_mode(), pytest.raises(ValueError, match="do not fit the static cache of 64 positions"):
        G.decode_static(dec, prompt(spec, 1, 60), 8, eos=[])


def test_sampling_draws_per_row():
    model, spec = build("tiny-qwen3")
    torch.manual_seed(0)
    with torch.inference_mode():
        out = G.decode_static(StaticDecoder(model, 32, 40), prompt(spec, 1, 32).expand(32, 32), 8, eos=[])
    assert out.tokens[:, 0].unique().numel() > 16


def test_run_generate_static_path(tmp_path, monkeypatch):
    from trainbench.trainer.bench import run_bench

    monkeypatch.setenv("TRAINBENCH_DECODE", "static")
    cfg = parse_args(
        ["--type", "generate", "--model", "tiny-qwen3", "--seq-len", "32", "--new-tokens", "6", "--steps", "1"]
        + ["--gen-batch-sizes", "1,4", "--device", "cpu", "--metrics-port", "-1"]
    )
    r = run_bench(cfg)
    g = r["generate"]
    assert g["decode_path"] == "static"
    b4 = g["batches"][1]
    assert b4["decode_tps"]["mean"] > 0 and b4["eager_decode_tps"] > 0 and b4["tokens_generated"] == 24
    nc = g["no_cache"]
    assert nc["teacher_forced"]["top1_agreement"] == 1.0 and nc["teacher_forced"]["logits_rel_err"] < 1e-4
    assert nc["static_vs_cache"]["logits_rel_err"] < 1e-4 and nc["first_divergence"] is None


def test_unsupported_models_and_paths_are_refused(monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = resolve_model("tiny-qwen3-moe")
    moe = AutoModelForCausalLM.from_config(AutoConfig.for_model(**spec.config))
    assert "qwen3_moe" in supports(moe)
    with pytest.raises(ValueError, match="static decode does not run model type 'qwen3_moe'"):
        StaticDecoder(moe, 1, 16)
    assert G.decode_path(moe, torch.device("cuda")) == "eager"  # auto falls back
    monkeypatch.setenv("TRAINBENCH_DECODE", "static")
    with pytest.raises(BadConfig, match="does not run model type"):
        G.decode_path(moe, CPU)
    monkeypatch.setenv("TRAINBENCH_DECODE", "fast")
    with pytest.raises(BadConfig, match="choose from auto, static, graph, eager"):
        G.decode_path(moe, CPU)
