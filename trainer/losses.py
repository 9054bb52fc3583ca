"""Losses on top of chunked token log-probabilities.

Full-vocabulary logits for the whole sequence never exist: `token_logprobs` runs the LM head over `chunk_size`
tokens at a time, keeps only each token's log-probability and log-sum-exp, and its backward recomputes one chunk
of logits at a time. Peak extra memory is one chunk of logits (chunk_size x vocab, float32) instead of T x vocab.

Losses (N = number of loss tokens, i.e. `loss_mask.sum()`, over the whole optimizer step when `normalizer` is given):

- SFT (masked cross-entropy):      L = -(1/N) * sum_t mask_t * logp_t
- RL (token-level policy gradient with importance ratio and token masking, prime-rl / "IcePop"-style):
      r_t    = exp(logp_t - logp_inf_t)                      (importance ratio vs the inference engine's log-prob)
      keep_t = mask_t and ratio_low <= r_t <= ratio_high       (no gradient through the test)
      L      = -(1/N) * sum_t keep_t * r_t * A_t
  so the gradient is -(1/N) * sum_t keep_t * r_t * A_t * grad(logp_t): tokens whose ratio left the trust band are
  dropped entirely instead of clipped, N still counts all loss tokens.
"""

from __future__ import annotations

import os

import torch

from trainbench.trainer.kernels.lm_head import fused_token_logprobs, rl_loss_fused, sft_loss_fused


class _ChunkedTokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size):
        n = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # float32 math for bf16/fp16 inputs
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=acc, device=hidden.device)
        for s in range(0, n, chunk_size):
            e = min(n, s + chunk_size)
            logits = (hidden[s:e] @ weight.t()).to(acc)
            lse_c = torch.logsumexp(logits, dim=-1)
            out[s:e] = logits.gather(1, targets[s:e, None]).squeeze(1) - lse_c
            lse[s:e] = lse_c
            del logits
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = hidden.shape[0]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = lse.dtype
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        for s in range(0, n, ctx.chunk_size):
            e = min(n, s + ctx.chunk_size)
            g = grad_out[s:e].to(acc)
            logits = (hidden[s:e] @ weight.t()).to(acc)
            # d logp_target / d logits = onehot(target) - softmax
            grad_logits = torch.exp(logits - lse[s:e, None]).mul_(-g[:, None])
            grad_logits.scatter_add_(1, targets[s:e, None], g[:, None])
            grad_logits = grad_logits.to(hidden.dtype)
            del logits
            if need_h:
                grad_h[s:e] = grad_logits @ weight
            if need_w:
                grad_w += (grad_logits.t() @ hidden[s:e]).to(acc)
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int = 4096):
    """log p(target_t | prefix) for each of N tokens: hidden [N, H], weight [V, H], targets [N] -> [N] float32.

    On CUDA the same function runs with compiled, fused elementwise work (`kernels.lm_head`); this plain
    version is the CPU path and the reference it is tested against."""
    if hidden.is_cuda:
        return fused_token_logprobs(hidden, weight, targets, chunk_size)
    return _ChunkedTokenLogprobs.apply(hidden, weight, targets.reshape(-1), int(chunk_size))


def _grad_in_forward() -> bool:
    """CUDA losses form the LM-head gradient in the forward unless TRAINBENCH_LM_HEAD=recompute (A/B knob)."""
    return os.environ.get("TRAINBENCH_LM_HEAD", "grad-in-forward") != "recompute"


def sft_loss(hidden, weight, targets, loss_mask, chunk_size: int = 4096, normalizer: float | None = None):
    """Masked cross-entropy, mean over loss tokens (or divided by `normalizer`)."""
    if hidden.is_cuda and _grad_in_forward():  # same loss, LM-head gradient formed in the forward (kernels.lm_head)
        return sft_loss_fused(hidden, weight, targets, loss_mask, chunk_size, normalizer)
    mask = loss_mask.reshape(-1).float()
    lp = token_logprobs(hidden, weight, targets, chunk_size)
    denom = normalizer if normalizer is not None else mask.sum().clamp(min=1.0)
    return -(lp * mask).sum() / denom


def rl_loss(
    hidden,
    weight,
    targets,
    loss_mask,
    inference_logprobs,
    advantages,
    chunk_size: int = 4096,
    ratio_low: float = 0.125,
    ratio_high: float = 8.0,
    normalizer: float | None = None,
):
    """Token-level policy-gradient loss with importance ratios and token masking (formula in the module doc).

    Returns (loss, kept_fraction) where kept_fraction is the share of loss tokens whose ratio stayed in band."""
    if hidden.is_cuda and _grad_in_forward():  # same loss, LM-head gradient formed in the forward (kernels.lm_head)
        return rl_loss_fused(
            hidden, weight, targets, loss_mask, inference_logprobs, advantages, chunk_size, ratio_low, ratio_high,
            normalizer,
        )  # fmt: skip
    mask = loss_mask.reshape(-1)
    lp = token_logprobs(hidden, weight, targets, chunk_size)
    ratio = torch.exp(lp - inference_logprobs.reshape(-1).float())
    with torch.no_grad():
        keep = mask & (ratio >= ratio_low) & (ratio <= ratio_high)
    denom = normalizer if normalizer is not None else mask.sum().clamp(min=1).float()
    loss = -(ratio * advantages.reshape(-1).float() * keep.float()).sum() / denom
    kept = keep.sum().float() / mask.sum().clamp(min=1).float()
    return loss, kept.detach()


class LossModule(torch.nn.Module):
    """A built model (`models.base.Impl`) and the loss of the job's type as one module: what DDP/FSDP wrap and the
    optimizer steps (training loop, autobatch trials). forward(batch, normalizer) -> (loss, kept fraction or None)."""

    def __init__(self, impl, cfg):
        super().__init__()
        self.model = impl.module
        self.impl = impl
        self.sft = cfg.type == "sft-full"
        self.chunk = cfg.loss_chunk
        self.ratio_low, self.ratio_high = cfg.ratio_low, cfg.ratio_high

    def forward(self, batch, normalizer):
        h = self.impl.hidden_states(batch)
        w = self.impl.lm_head_weight
        if self.sft:
            return sft_loss(h, w, batch.targets, batch.loss_mask, self.chunk, normalizer), None
        return rl_loss(
            h,
            w,
            batch.targets,
            batch.loss_mask,
            batch.inference_logprobs,
            batch.advantages,
            self.chunk,
            self.ratio_low,
            self.ratio_high,
            normalizer,
        )
