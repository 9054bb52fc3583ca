"""Chunked LM head + log-probabilities with fused (compiled) elementwise work, for CUDA.

Same function as `trainbench.trainer.losses.token_logprobs`: log p(target) for N tokens without ever holding
full-vocabulary logits for more than `chunk_size` tokens. Per chunk the forward is one bf16 matmul plus one
fused reduction (log-sum-exp and the target logit read straight from the bf16 logits); the backward recomputes
the chunk's logits and forms d logp / d logits = onehot(target) - softmax in one fused pass that writes bf16,
then two matmuls. The float32 logits that the plain version materialises (chunk x vocab x 4 bytes, several
passes) never exist. The LM head costs 4 matmul passes instead of 3 (the recompute), about 2% of a Qwen3-0.6B
step at 16k tokens.
"""

from __future__ import annotations

import torch

_compiled: dict[str, object] = {}


def _fwd_stats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    lf = logits.float()
    lse = torch.logsumexp(lf, dim=-1)
    tgt = lf.gather(1, targets[:, None]).squeeze(1)
    return torch.stack([tgt - lse, lse])


def _bwd_grad(logits: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    p = torch.exp(logits.float() - lse[:, None])
    cols = torch.arange(logits.shape[1], device=logits.device)
    onehot = (cols[None, :] == targets[:, None]).float()
    return ((onehot - p) * g[:, None]).to(logits.dtype)


def _fn(name, compiled=True):
    if not compiled:
        return {"fwd": _fwd_stats, "bwd": _bwd_grad}[name]
    if name not in _compiled:
        fn = {"fwd": _fwd_stats, "bwd": _bwd_grad}[name]
        _compiled[name] = torch.compile(fn, dynamic=False)
    return _compiled[name]


class _FusedChunkedLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size, compiled):
        n = hidden.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        fwd = _fn("fwd", compiled)
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            logits = hidden[s:e] @ weight.t()
            stats = fwd(logits, targets[s:e])
            out[s:e] = stats[0]
            lse[s:e] = stats[1]
            del logits
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size, ctx.compiled = chunk_size, compiled
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = hidden.shape[0]
        bwd = _fn("bwd", ctx.compiled)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        g_all = grad_out.float()
        for s in range(0, n, ctx.chunk_size):
            e = min(n, s + ctx.chunk_size)
            logits = hidden[s:e] @ weight.t()
            grad_logits = bwd(logits, lse[s:e], targets[s:e], g_all[s:e])
            del logits
            if need_h:
                torch.mm(grad_logits, weight, out=grad_h[s:e])
            if need_w:
                grad_w += grad_logits.t() @ hidden[s:e]
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None


def fused_token_logprobs(hidden, weight, targets, chunk_size: int = 4096, compiled: bool = True):
    """hidden [N, H], weight [V, H], targets [N] -> log p(target) [N] float32. `compiled=False` runs the same
    elementwise functions eagerly (CPU tests)."""
    return _FusedChunkedLogprobs.apply(hidden, weight, targets.reshape(-1), int(chunk_size), bool(compiled))


# --- losses with the LM-head gradient formed in the forward pass -----------------------------------------------
# For bench mode's losses the derivative of the loss with respect to each token's log-prob is known as soon as
# that log-prob is (SFT: -mask / N; RL: -keep * ratio * A / N, as d ratio / d logp = ratio). So each chunk's
# logits are used once: log-prob, then d loss / d logits = g * (onehot - softmax), then grad_hidden and
# grad_weight, all in the forward; the backward only scales them by the incoming gradient. Against
# `fused_token_logprobs` this drops the backward's recompute of the logits: one [chunk, vocab] matmul and one
# logits pass per chunk (about 7% of the real work of a Qwen3-0.6B step at 8k tokens). Same idea as Liger's
# fused linear cross-entropy, here for the policy-gradient loss too.


class _LinearLossGradInForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, coef_fn, chunk_size, compiled):
        n = hidden.shape[0]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        fwd, bwd = _fn("fwd", compiled), _fn("bwd", compiled)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        lp_all = torch.empty(n, dtype=torch.float32, device=hidden.device)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            h = hidden[s:e]
            logits = h @ weight.t()
            stats = fwd(logits, targets[s:e])
            lp, lse = stats[0], stats[1]
            lp_all[s:e] = lp
            terms, g = coef_fn(lp, s, e)
            loss += terms.sum()
            if need_h or need_w:
                grad_logits = bwd(logits, lse, targets[s:e], g.float())
                del logits
                if need_h:
                    torch.mm(grad_logits, weight, out=grad_h[s:e])
                if need_w:
                    grad_w += grad_logits.t() @ h
        ctx.save_for_backward(*(t for t in (grad_h, grad_w) if t is not None))
        ctx.has = (need_h, need_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(lp_all)
        return loss, lp_all

    @staticmethod
    def backward(ctx, grad_loss, _grad_lp):
        saved = list(ctx.saved_tensors)
        need_h, need_w = ctx.has
        gh = (saved.pop(0) * grad_loss).to(ctx.saved_tensors[0].dtype) if need_h else None
        gw = (saved.pop(0) * grad_loss).to(ctx.weight_dtype) if need_w else None
        return gh, gw, None, None, None, None


def _denominator(mask, normalizer):
    return normalizer if normalizer is not None else mask.sum().clamp(min=1).float()


def sft_loss_fused(hidden, weight, targets, loss_mask, chunk_size=4096, normalizer=None, compiled=True):
    """`losses.sft_loss` with the LM-head gradient formed in the forward (see above)."""
    mask = loss_mask.reshape(-1).float()
    denom = _denominator(mask, normalizer)

    def coef(lp, s, e):
        m = mask[s:e] / denom
        return -lp * m, -m

    loss, _ = _LinearLossGradInForward.apply(hidden, weight, targets.reshape(-1), coef, int(chunk_size), compiled)
    return loss


def rl_loss_fused(
    hidden,
    weight,
    targets,
    loss_mask,
    inference_logprobs,
    advantages,
    chunk_size=4096,
    ratio_low=0.125,
    ratio_high=8.0,
    normalizer=None,
    compiled=True,
):
    """`losses.rl_loss` with the LM-head gradient formed in the forward (see above). Returns (loss, kept)."""
    mask = loss_mask.reshape(-1)
    inf = inference_logprobs.reshape(-1).float()
    adv = advantages.reshape(-1).float()
    denom = _denominator(mask, normalizer)

    def coef(lp, s, e):
        ratio = torch.exp(lp - inf[s:e])
        keep = mask[s:e] & (ratio >= ratio_low) & (ratio <= ratio_high)
        terms = -(ratio * adv[s:e] * keep.float()) / denom
        return terms, terms  # d terms / d logp = terms, since d ratio / d logp = ratio

    loss, lp = _LinearLossGradInForward.apply(hidden, weight, targets.reshape(-1), coef, int(chunk_size), compiled)
    with torch.no_grad():
        ratio = torch.exp(lp - inf)
        keep = mask & (ratio >= ratio_low) & (ratio <= ratio_high)
        kept = keep.sum().float() / mask.sum().clamp(min=1).float()
    return loss, kept
