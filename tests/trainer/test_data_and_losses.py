"""Packed synthetic data, document isolation in attention, and the chunked losses against naive references."""

from __future__ import annotations

import pytest
import torch

from trainbench.trainer.config import MIN_DOC_LEN, JobConfig
from trainbench.trainer.data import make_batch, make_batches
from trainbench.trainer.losses import rl_loss, sft_loss, token_logprobs
from trainbench.trainer.models import build_impl
from trainbench.trainer.specs import resolve_model


def test_batch_layout():
    b = make_batch(2, 200, 4, 512, torch.Generator().manual_seed(3))
    assert b.input_ids.shape == (2, 200) and b.input_ids.dtype == torch.long
    assert b.cu_seqlens.dtype == torch.int32 and b.cu_seqlens.tolist()[-1] == 400 and len(b.cu_seqlens) == 9
    cu = b.cu_seqlens.tolist()
    flat_pos = b.position_ids.reshape(-1)
    flat_doc = b.doc_ids.reshape(-1)
    for s, e in zip(cu[:-1], cu[1:], strict=True):
        assert e - s >= MIN_DOC_LEN
        assert flat_pos[s:e].tolist() == list(range(e - s))
        assert len(set(flat_doc[s:e].tolist())) == 1
        # targets are the next token of the same document; the last token of a document is never trained
        assert torch.equal(b.targets.reshape(-1)[s : e - 1], b.input_ids.reshape(-1)[s + 1 : e])
        assert not b.loss_mask.reshape(-1)[e - 1]
        assert not b.loss_mask.reshape(-1)[s]  # prompt
        assert len(set(b.advantages.reshape(-1)[s:e].tolist())) == 1
    assert b.max_seqlen == max(e - s for s, e in zip(cu[:-1], cu[1:], strict=True))
    assert len(set(flat_doc.tolist())) == 8


def test_batches_are_deterministic_and_differ_by_seed():
    cfg = JobConfig(seq_len=128, batch_size=2, micro_batch=1)
    spec = resolve_model("tiny-qwen3")
    a, b, other = make_batches(cfg, spec, 7), make_batches(cfg, spec, 7), make_batches(cfg, spec, 8)
    assert len(a) == 2 * min(4, cfg.steps + cfg.warmup_steps)
    assert all(torch.equal(x.input_ids, y.input_ids) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0].input_ids, other[0].input_ids)


@pytest.mark.parametrize("model", ["tiny-qwen3", "tiny-llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_does_not_cross_documents(model, attn):
    cfg = JobConfig(model=model, seq_len=96, attn=attn, ac="none", docs_per_seq=3)
    spec = resolve_model(model)
    torch.manual_seed(0)
    impl = build_impl(cfg, spec, torch.device("cpu"))
    batch = make_batch(1, 96, 3, spec.vocab, torch.Generator().manual_seed(1))
    cu = batch.cu_seqlens.tolist()
    changed = make_batch(1, 96, 3, spec.vocab, torch.Generator().manual_seed(1))
    changed.input_ids[0, cu[0] : cu[1]] = (changed.input_ids[0, cu[0] : cu[1]] + 7) % spec.vocab  # rewrite doc 1
    with torch.no_grad():
        h1, h2 = impl.hidden_states(batch), impl.hidden_states(changed)
    assert not torch.allclose(h1[cu[0] : cu[1]], h2[cu[0] : cu[1]])  # doc 1 itself changed
    torch.testing.assert_close(h1[cu[1] :], h2[cu[1] :], rtol=1e-5, atol=1e-5)  # docs 2, 3 did not
    # and each document equals the model run on that document alone
    with torch.no_grad():
        alone = impl.backbone(
            input_ids=batch.input_ids[:, cu[1] : cu[2]], position_ids=batch.position_ids[:, cu[1] : cu[2]]
        ).last_hidden_state[0]
    torch.testing.assert_close(h1[cu[1] : cu[2]], alone, rtol=1e-4, atol=1e-4)


def naive_logprobs(h, w, t):
    return torch.log_softmax((h @ w.t()).float(), dim=-1).gather(1, t[:, None]).squeeze(1)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_chunked_logprobs_match_naive_values_and_gradients(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 16, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 40, (50,), generator=g)
    up = torch.randn(50, generator=g, dtype=torch.float64)
    lp = token_logprobs(h, w, t, chunk)
    (lp.double() * up).sum().backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = naive_logprobs(h, w, t)
    (ref.double() * up).sum().backward()
    torch.testing.assert_close(lp.double(), ref.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gh, h.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gw, w.grad, rtol=1e-5, atol=1e-6)


def test_frozen_weight_gets_no_gradient_work():
    h = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(20, 8)  # frozen LM head (LoRA)
    token_logprobs(h, w, torch.randint(0, 20, (10,)), 3).sum().backward()
    assert h.grad is not None and w.grad is None


def test_sft_loss_is_masked_mean_cross_entropy():
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(30, 8, generator=g), torch.randn(25, 8, generator=g)
    t = torch.randint(0, 25, (30,), generator=g)
    mask = torch.rand(30, generator=g) > 0.3
    ref = torch.nn.functional.cross_entropy(h[mask] @ w.t(), t[mask])
    torch.testing.assert_close(sft_loss(h, w, t, mask, 4), ref)
    torch.testing.assert_close(sft_loss(h, w, t, mask, 4, normalizer=60.0), ref * mask.sum() / 60.0)


def test_rl_loss_formula_and_token_masking():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(40, 8, generator=g, requires_grad=True)
    w = torch.randn(25, 8, generator=g)
    t = torch.randint(0, 25, (40,), generator=g)
    mask = torch.rand(40, generator=g) > 0.2
    lp = naive_logprobs(h, w, t).detach()
    inf = lp + torch.randn(40, generator=g) * 1.5  # some ratios leave [0.5, 2]
    adv = torch.randn(40, generator=g)
    loss, kept = rl_loss(h, w, t, mask, inf, adv, 6, ratio_low=0.5, ratio_high=2.0)
    ratio = torch.exp(lp - inf)
    keep = mask & (ratio >= 0.5) & (ratio <= 2.0)
    assert 0 < keep.sum() < mask.sum()  # the test exercises the masking
    torch.testing.assert_close(loss, -(ratio * adv * keep).sum() / mask.sum())
    torch.testing.assert_close(kept, keep.sum().float() / mask.sum())
    loss.backward()
    # gradient flows only through kept tokens: d loss / d h_t == 0 for dropped tokens
    dropped = mask & ~keep
    assert torch.all(h.grad[dropped] == 0) and torch.any(h.grad[keep] != 0)
