"""The fast Qwen3/Llama implementation computes what transformers computes (fp32 on CPU, tight tolerance).

Ground truth is transformers' own model run on each document separately (that is what document-masked
attention means); the fast model runs the packed micro-batch in one pass.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from trainbench.trainer.data import make_batch  # noqa: E402
from trainbench.trainer.kernels.lm_head import fused_token_logprobs  # noqa: E402
from trainbench.trainer.losses import sft_loss, token_logprobs  # noqa: E402
from trainbench.trainer.models.qwen3_fast import FastCausalLM  # noqa: E402
from trainbench.trainer.specs import resolve_model  # noqa: E402

TOL = 2e-5  # fp32 on CPU


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def hf_model(name: str, seed: int = 0):
    spec = resolve_model(name)
    cfg = AutoConfig.for_model(**spec.config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float()
    with torch.no_grad():  # non-trivial norm weights, so a wrong norm shows up
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return spec, model


def hf_hidden_per_doc(model, batch):
    """Final-normed hidden states, transformers run on each document separately."""
    flat = batch.input_ids.reshape(-1)
    cu = batch.cu_seqlens.tolist()
    outs = [model.model(input_ids=flat[None, s:e]).last_hidden_state[0] for s, e in zip(cu[:-1], cu[1:], strict=True)]
    return torch.cat(outs)


def batch_for(spec, b=2, t=96, docs=3, seed=1):
    return make_batch(b, t, docs, spec.vocab, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-llama"])
def test_state_dict_loads_both_ways(name):
    spec, hf = hf_model(name)
    fast = FastCausalLM(spec.config)
    fast.load_state_dict(hf.state_dict(), strict=True)
    _, hf2 = hf_model(name, seed=1)
    hf2.load_state_dict(fast.state_dict(), strict=True)
    for k, v in hf.state_dict().items():
        assert torch.equal(hf2.state_dict()[k], v), k


@pytest.mark.parametrize("name", ["tiny-qwen3", "tiny-llama"])
def test_logits_match_transformers_per_document(name):
    spec, hf = hf_model(name)
    fast = FastCausalLM(spec.config)
    fast.load_state_dict(hf.state_dict())
    batch = batch_for(spec)
    with torch.no_grad():
        ref = hf.lm_head(hf_hidden_per_doc(hf, batch))
        out = fast(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen)
    assert out.shape == (batch.num_tokens, spec.vocab)
    assert rel(out, ref) < TOL
    # documents really are separated: changing document 0 leaves the others' logits unchanged
    ids2 = batch.input_ids.clone()
    cu = batch.cu_seqlens.tolist()
    ids2.view(-1)[cu[0] : cu[1]] = (ids2.view(-1)[cu[0] : cu[1]] + 7) % spec.vocab
    with torch.no_grad():
        out2 = fast(ids2, batch.position_ids, batch.cu_seqlens, batch.max_seqlen)
    assert torch.allclose(out2[cu[1] :], out[cu[1] :], atol=1e-6)
    assert not torch.allclose(out2[: cu[1]], out[: cu[1]], atol=1e-3)


def _sft_grads(model, hidden_fn, batch, weight):
    model.zero_grad(set_to_none=True)
    loss = sft_loss(hidden_fn(), weight(), batch.targets, batch.loss_mask, chunk_size=64)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("ac", ["none", "recompute", "selective"])
def test_loss_and_gradients_match_transformers(ac):
    spec, hf = hf_model("tiny-qwen3")
    fast = FastCausalLM(spec.config).configure(ac=ac)
    fast.load_state_dict(hf.state_dict())
    batch = batch_for(spec)
    ref_loss, ref_g = _sft_grads(hf, lambda: hf_hidden_per_doc(hf, batch), batch, lambda: hf.lm_head.weight)
    loss, g = _sft_grads(
        fast,
        lambda: fast.hidden_states(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen),
        batch,
        lambda: fast.lm_head.weight,
    )
    assert abs(loss.item() - ref_loss.item()) < 1e-5 * abs(ref_loss.item())
    assert set(g) == set(ref_g)
    for n in ref_g:
        assert rel(g[n], ref_g[n]) < 1e-4, n


def test_lora_matches_peft():
    peft = pytest.importorskip("peft")
    spec, hf = hf_model("tiny-qwen3")
    fast = FastCausalLM(spec.config)
    fast.load_state_dict(hf.state_dict())
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert fast.add_lora(8, 16.0, targets) == spec.layers * 7
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=8, lora_alpha=16, target_modules=list(targets), lora_dropout=0.0))
    # same adapters in both, with B non-zero so that every gradient path is exercised
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, mod in fast.named_modules():
            if getattr(mod, "lora_A", None) is not None:
                a = torch.randn(mod.lora_A.shape, generator=gen) * 0.1
                b = torch.randn(mod.lora_B.shape, generator=gen) * 0.1
                mod.lora_A.copy_(a)
                mod.lora_B.copy_(b)
                pmod = pm.base_model.model.get_submodule(name)
                pmod.lora_A["default"].weight.copy_(a)
                pmod.lora_B["default"].weight.copy_(b)
    trainable = [n for n, p in fast.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    batch = batch_for(spec)
    inner = pm.base_model.model
    ref_loss, ref_g = _sft_grads(pm, lambda: hf_hidden_per_doc(inner, batch), batch, lambda: inner.lm_head.weight)
    loss, g = _sft_grads(
        fast,
        lambda: fast.hidden_states(batch.input_ids, batch.position_ids, batch.cu_seqlens, batch.max_seqlen),
        batch,
        lambda: fast.lm_head.weight,
    )
    assert abs(loss.item() - ref_loss.item()) < 1e-5 * abs(ref_loss.item())
    ref_g = {k.replace("base_model.model.", "").replace(".default.weight", ""): v for k, v in ref_g.items()}
    assert set(g) == set(ref_g)
    for n in g:
        assert rel(g[n], ref_g[n]) < 1e-4, n


def test_fused_lm_head_matches_plain_chunked():
    gen = torch.Generator().manual_seed(0)
    n, h, v = 200, 32, 300
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = (torch.randn(v, h, generator=gen) * 0.3).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=gen)
    coef = torch.randn(n, generator=gen)
    ref = token_logprobs(hidden, weight, targets, chunk_size=64)
    (ref * coef).sum().backward()
    rg_h, rg_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    out = fused_token_logprobs(hidden, weight, targets, chunk_size=48, compiled=False)
    (out * coef).sum().backward()
    full = torch.log_softmax(hidden.detach() @ weight.detach().t(), -1).gather(1, targets[:, None]).squeeze(1)
    assert rel(out, full) < 1e-6 and rel(ref, full) < 1e-6
    assert rel(hidden.grad, rg_h) < 1e-5 and rel(weight.grad, rg_w) < 1e-5


@pytest.mark.parametrize("kind", ["sft", "rl"])
@pytest.mark.parametrize("normalizer", [None, 123.0])
def test_grad_in_forward_losses_match_plain_losses(kind, normalizer):
    """kernels.lm_head.{sft,rl}_loss_fused (the CUDA path of losses.*) == the CPU losses, value and gradients."""
    from trainbench.trainer import losses
    from trainbench.trainer.kernels.lm_head import rl_loss_fused, sft_loss_fused

    gen = torch.Generator().manual_seed(1)
    n, h, v = 150, 24, 200
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = (torch.randn(v, h, generator=gen) * 0.3).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=gen)
    mask = torch.rand(n, generator=gen) > 0.3
    lp = torch.log_softmax(hidden.detach() @ weight.detach().t(), -1).gather(1, targets[:, None]).squeeze(1)
    # inference log-probs near the model's, some far off so that the ratio band drops tokens
    inf = lp + torch.randn(n, generator=gen) * 0.5
    inf[::7] -= 5.0
    adv = torch.randn(n, generator=gen)

    def run(fn):
        hidden.grad = weight.grad = None
        if kind == "sft":
            loss, kept = fn(hidden, weight, targets, mask, 64, normalizer=normalizer), None
        else:
            loss, kept = fn(hidden, weight, targets, mask, inf, adv, 64, 0.5, 2.0, normalizer=normalizer)
        (loss * 3.0).backward()  # a non-unit upstream gradient
        return loss.detach(), kept, hidden.grad.clone(), weight.grad.clone()

    ref = run(losses.sft_loss if kind == "sft" else losses.rl_loss)
    fused_fn = sft_loss_fused if kind == "sft" else rl_loss_fused
    out = run(lambda *a, **k: fused_fn(*a, **k, compiled=False))
    assert abs(out[0].item() - ref[0].item()) <= 1e-6 * max(1.0, abs(ref[0].item()))
    if kind == "rl":
        assert 0.0 < ref[1].item() < 1.0 and abs(out[1].item() - ref[1].item()) < 1e-7
    assert rel(out[2], ref[2]) < 1e-5 and rel(out[3], ref[3]) < 1e-5


def test_bench_mode_fast_impl_on_cpu_and_its_choices():
    """Bench mode runs the fast implementation end to end (CPU: SDPA per document), reports what ran, and
    refuses what cannot run here."""
    from trainbench.trainer.bench import run_bench
    from trainbench.trainer.config import BadConfig, JobConfig
    from trainbench.trainer.memory import fast_estimate_bytes as estimate_bytes
    from trainbench.trainer.models.qwen3_fast import build

    common = {"model": "tiny-qwen3", "device": "cpu", "metrics_port": -1, "steps": 2, "warmup_steps": 1}
    res = run_bench(JobConfig(type="rl-lora", impl="fast", ac="selective", seq_len=128, **common))
    assert res["status"] == "ok" and res["impl"] == "fast"
    assert res["attn_backend"] == "sdpa" and res["ac"] == "selective"
    assert res["n_trainable"] == res["n_adapter"] > 0
    spec = resolve_model("qwen3-0.6b")
    est = [estimate_bytes(spec, m, 16384, spec.n_total(), 4096) for m in ("none", "selective", "recompute")]
    assert est[0] > est[1] > est[2]
    for attn in ("flex", "varlen", "sdpa-cudnn"):
        with pytest.raises(BadConfig):
            build(
                JobConfig(type="sft-full", impl="fast", attn=attn, **common),
                resolve_model("tiny-qwen3"),
                torch.device("cpu"),
            )
    # Qwen3-MoE runs in the fast implementation too (models/moe.py; tests/trainer_parallel)
    moe = build(
        JobConfig(impl="fast", **{**common, "model": "tiny-qwen3-moe"}),
        resolve_model("tiny-qwen3-moe"),
        torch.device("cpu"),
    )
    assert "mlp.experts.gate_up_proj" in "".join(n for n, _ in moe.module.named_parameters())


def test_attn_auto_choice(monkeypatch):
    """`--attn auto`: fa4 where it imports on Hopper/Blackwell, cuDNN (one document) or flex (packed) otherwise;
    plain SDPA on the CPU. The CUDA branches are checked with the capability and the import patched."""
    import sys
    import types

    from trainbench.trainer.models import qwen3_fast as qf

    cpu = torch.device("cpu")
    assert qf.resolve_attn("auto", cpu, 4) == "sdpa"
    assert not qf.doc_attention.fa4_usable(cpu)
    cuda = torch.device("cuda")
    for cap, fa4_imports, docs, want in [
        ((9, 0), True, 1, "fa4"),
        ((10, 0), True, 4, "fa4"),
        ((9, 0), False, 1, "sdpa-cudnn"),
        ((9, 0), False, 4, "flex"),
        ((8, 0), True, 1, "sdpa-cudnn"),  # Ampere: no flash-attn-4 kernels
    ]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, cap=cap: cap)
        pkg = types.ModuleType("flash_attn")
        pkg.cute = types.ModuleType("flash_attn.cute")
        monkeypatch.setitem(sys.modules, "flash_attn", pkg)
        monkeypatch.setitem(sys.modules, "flash_attn.cute", pkg.cute if fa4_imports else None)
        assert qf.resolve_attn("auto", cuda, docs) == want, (cap, fa4_imports, docs)
        # context parallelism: flex over the gathered keys, whatever else the GPU has (fa4 has no CP form)
        assert qf.resolve_attn("auto", cuda, docs, cp=2) == "flex", (cap, fa4_imports, docs)
    assert qf.resolve_attn("auto", cpu, 1, cp=2) == "sdpa"
