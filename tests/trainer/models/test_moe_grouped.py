"""The MoE expert compute (`models/moe.py`): the grouped-GEMM path (`torch._grouped_mm`, whose CPU kernel runs
the same dispatch, offsets and permutations as the CUDA one) against the per-expert loop and against
transformers' `Qwen3MoeSparseMoeBlock`, forward and backward, with experts that receive no token."""

from __future__ import annotations

import pytest
import torch

from trainbench.trainer.models import moe
from trainbench.trainer.models.moe import SparseMoeBlock, grouped_mm_usable, set_moe_impl
from trainbench.trainer.specs import resolve_model

pytestmark = pytest.mark.skipif(
    not grouped_mm_usable(torch.zeros(1, 64), torch.zeros(2, 64, 32)), reason="torch._grouped_mm has no CPU kernel"
)


@pytest.fixture(autouse=True)
def _restore_impl():
    before = moe.MOE_IMPL
    yield
    moe.MOE_IMPL = before


def blocks(dtype=torch.float32, seed=0, cold_experts=()):
    """(ours, transformers') sparse MoE blocks of tiny-qwen3-moe with the same random weights; the router
    prefers some experts and never picks `cold_experts`."""
    from transformers import AutoConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    spec = resolve_model("tiny-qwen3-moe")
    torch.manual_seed(seed)
    ref = Qwen3MoeSparseMoeBlock(AutoConfig.for_model(**spec.config)).to(dtype)
    with torch.no_grad():
        for _, p in ref.named_parameters():
            p.normal_(0.0, 0.5)
        for e in cold_experts:
            ref.gate.weight[e].fill_(0.0)
            ref.gate.weight[e, 0] = -100.0  # inputs below have x[:, 0] > 0: never in the top-k
    ours = SparseMoeBlock(spec.config).to(dtype)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return spec, ours, ref


def inputs(n, hidden, dtype=torch.float32, seed=1):
    x = torch.randn(n, hidden, generator=torch.Generator().manual_seed(seed))
    x[:, 0] = x[:, 0].abs() + 0.1
    return x.to(dtype).requires_grad_(True)


def run(block, x, impl):
    set_moe_impl(impl)
    x = x.detach().clone().requires_grad_(True)
    y = block(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y.dtype)
    (y.float() * g.float()).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in block.named_parameters()}
    block.zero_grad(set_to_none=True)
    return y.detach(), x.grad.detach(), grads


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("n", [1, 37, 256])
def test_grouped_equals_loop_and_transformers_fp32(n):
    spec, ours, ref = blocks(cold_experts=(3, 5))
    x = inputs(n, spec.hidden)
    y_g, dx_g, w_g = run(ours, x, "grouped")
    y_l, dx_l, w_l = run(ours, x, "loop")
    xr = x.detach().clone().requires_grad_(True)
    out = ref(xr[None])
    y_r = (out[0] if isinstance(out, tuple) else out)[0]
    g = torch.randn(y_r.shape, generator=torch.Generator().manual_seed(7))
    (y_r * g).sum().backward()
    assert y_g.shape == (n, spec.hidden) and torch.isfinite(y_g).all()
    assert rel(y_g, y_r) < 1e-5 and rel(y_l, y_r) < 1e-5
    assert rel(dx_g, xr.grad) < 1e-5 and rel(dx_l, dx_g) < 1e-5
    ref_w = {name: p.grad for name, p in ref.named_parameters()}
    for name, gw in w_g.items():  # expert weights (cold experts: zero gradient) and the router
        assert rel(gw, w_l[name]) < 1e-5, name
        assert rel(gw, ref_w[name]) < 1e-5, name
    assert w_g["experts.gate_up_proj"][3].abs().max() == 0 and w_g["experts.down_proj"][5].abs().max() == 0


def test_grouped_equals_loop_bf16():
    spec, ours, _ = blocks(dtype=torch.bfloat16, cold_experts=(0,))
    x = inputs(200, spec.hidden, torch.bfloat16)
    y_g, dx_g, w_g = run(ours, x, "grouped")
    y_l, dx_l, w_l = run(ours, x, "loop")
    assert rel(y_g, y_l) < 1e-2 and rel(dx_g, dx_l) < 1e-2
    assert all(rel(w_g[k], w_l[k]) < 1e-2 for k in w_g)


def test_grouped_path_reads_nothing_back_to_the_host(monkeypatch):
    """The grouped path never asks the device for a number (tolist/item): no per-layer host sync on a GPU."""
    spec, ours, _ = blocks()
    x = inputs(64, spec.hidden)
    set_moe_impl("grouped")

    def refuse(*a, **k):
        raise AssertionError("host sync")

    monkeypatch.setattr(torch.Tensor, "tolist", refuse)
    monkeypatch.setattr(torch.Tensor, "item", refuse)
    ours(x).sum().backward()
    monkeypatch.undo()
    set_moe_impl("loop")
    with pytest.raises(AssertionError, match="host sync"):
        monkeypatch.setattr(torch.Tensor, "tolist", refuse)
        ours(x.detach())


def test_forward_is_deterministic():
    spec, ours, _ = blocks(dtype=torch.bfloat16)
    x = inputs(300, spec.hidden, torch.bfloat16)
    a = run(ours, x, "grouped")
    b = run(ours, x, "grouped")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_no_rows_for_the_local_experts():
    """Under EP a rank can receive no token at all: both paths return an empty result."""
    spec, ours, _ = blocks()
    x = torch.zeros(0, spec.hidden, requires_grad=True)
    counts = torch.zeros(ours.experts.n_local, dtype=torch.long)
    for impl in ("grouped", "loop"):
        set_moe_impl(impl)
        assert ours.experts.run_local(x, counts).shape == (0, spec.hidden)


def test_unknown_impl_is_refused():
    with pytest.raises(ValueError, match="unknown MoE implementation 'fast'"):
        set_moe_impl("fast")
