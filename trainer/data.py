"""Synthetic packed data for bench mode.

Each sequence of `seq_len` tokens packs `docs_per_seq` documents of random lengths (each at least
`config.MIN_DOC_LEN`). Within a document: position ids restart at 0, the target of a token is the next token of
the same document (the last token of a document has no target), the first quarter of each document is its
"prompt" (not trained), the rest its "completion" (trained). For RL the batch also carries synthetic rollout data:
inference log-probs near those of a uniform policy (-log V plus small noise, so importance ratios sit near 1
for a randomly initialised model) and one advantage per document (standard normal, GRPO-style).

Everything is generated on the CPU from a seeded `torch.Generator`: the same (config, spec, seed) gives the
same batches on any machine. `Batch.to(device)` moves a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from trainbench.trainer.config import MIN_DOC_LEN, JobConfig
from trainbench.trainer.specs import ModelSpec

FIRST_TOKEN_ID = 3  # keep the smallest ids (pad/bos/eos in real vocabularies) out of the synthetic text
MAX_DISTINCT_STEPS = 4  # batches cycle after this many optimizer steps (generation cost stays small)


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    targets: torch.Tensor  # [B, T] long (0 where loss_mask is False)
    position_ids: torch.Tensor  # [B, T] long, 0 at each document start
    loss_mask: torch.Tensor  # [B, T] bool
    doc_ids: torch.Tensor  # [B, T] int32, unique per document over the flattened batch
    cu_seqlens: torch.Tensor  # [n_docs + 1] int32, document boundaries over the flattened B*T tokens
    max_seqlen: int
    inference_logprobs: torch.Tensor  # [B, T] float32
    advantages: torch.Tensor  # [B, T] float32

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    def to(self, device) -> Batch:
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return Batch(**kw)


def doc_lengths(seq_len: int, docs: int, gen: torch.Generator) -> list[int]:
    """Split `seq_len` into `docs` lengths, each >= MIN_DOC_LEN, summing to `seq_len`."""
    if seq_len < docs * MIN_DOC_LEN:
        raise ValueError(f"seq_len {seq_len} too short for {docs} documents of >= {MIN_DOC_LEN} tokens")
    spare = seq_len - docs * MIN_DOC_LEN
    weights = torch.rand(docs, generator=gen) + 0.25
    extra = (weights / weights.sum() * spare).floor().long()
    extra[-1] += spare - int(extra.sum())
    return [MIN_DOC_LEN + int(e) for e in extra]


def make_batch(micro_batch: int, seq_len: int, docs: int, vocab: int, gen: torch.Generator) -> Batch:
    B, T = micro_batch, seq_len
    input_ids = torch.randint(FIRST_TOKEN_ID, vocab, (B, T), generator=gen)
    targets = torch.zeros(B, T, dtype=torch.long)
    position_ids = torch.empty(B, T, dtype=torch.long)
    loss_mask = torch.zeros(B, T, dtype=torch.bool)
    doc_ids = torch.empty(B, T, dtype=torch.int32)
    advantages = torch.empty(B, T, dtype=torch.float32)
    cu = [0]
    max_len = 0
    for b in range(B):
        start = 0
        for d, length in enumerate(doc_lengths(T, docs, gen)):
            end = start + length
            position_ids[b, start:end] = torch.arange(length)
            doc_ids[b, start:end] = b * docs + d
            targets[b, start : end - 1] = input_ids[b, start + 1 : end]
            prompt = max(1, length // 4)
            loss_mask[b, start + prompt : end - 1] = True
            advantages[b, start:end] = float(torch.randn(1, generator=gen))
            cu.append(b * T + end)
            max_len = max(max_len, length)
            start = end
    noise = torch.randn(B, T, generator=gen) * 0.05
    inference_logprobs = (-math.log(vocab) + noise).float()
    return Batch(
        input_ids=input_ids,
        targets=targets,
        position_ids=position_ids,
        loss_mask=loss_mask,
        doc_ids=doc_ids,
        cu_seqlens=torch.tensor(cu, dtype=torch.int32),
        max_seqlen=max_len,
        inference_logprobs=inference_logprobs,
        advantages=advantages,
    )


def make_batches(cfg: JobConfig, spec: ModelSpec, seed: int) -> list[Batch]:
    """The micro-batches one rank cycles through: `grad_accum` per optimizer step, for up to
    MAX_DISTINCT_STEPS distinct steps (one step's worth with `fixed_batch`). Deterministic in `seed`."""
    gen = torch.Generator().manual_seed(seed)
    distinct_steps = 1 if cfg.fixed_batch else min(MAX_DISTINCT_STEPS, cfg.steps + cfg.warmup_steps)
    n = cfg.grad_accum * distinct_steps
    return [make_batch(cfg.micro_batch, cfg.seq_len, cfg.docs_per_seq, spec.vocab, gen) for _ in range(n)]
