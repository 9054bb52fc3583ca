"""Static-KV-cache decoding with CUDA graphs for the `generate` benchmark (gpt-fast style).

`StaticDecoder(model, batch, max_len)` reads the weights of a transformers Qwen3 / Qwen2 / Llama causal LM
(dense, full attention) and decodes with its own forward:

- the K/V cache is preallocated, [B, kv_heads, max_len, head_dim] per layer, written in place at the step's
  position (`index_copy_` with a device position), so every decode step has the same shapes and addresses;
- attention of the one new query per row runs over the whole cache with a mask `position <= pos` (the rows of
  a batch share the position: one prompt length); the query heads that share a K/V head are laid out as its
  "query length" ([B, kv, group, D]), so K/V are read once per kv head, never expanded;
- q/k/v and gate/up run as one GEMM each (weights concatenated once);
- `compile=True`: the per-layer pieces around attention are `torch.compile`d (RMSNorm, RoPE, SwiGLU and the
  residuals fuse into a few kernels; one graph serves every layer);
- `graphs=True` (CUDA): the whole decode step (embedding, every layer, final norm, LM head, sampling, the EOS
  bookkeeping and the position increment) is captured once per decoder into a `torch.cuda.CUDAGraph`, so a step
  is one graph launch: at batch 1 the GPU, not Python, sets the pace.

Sampling: `temperature == 0` is greedy (argmax); otherwise the exponential race `argmax(p / E)`, E ~ Exp(1),
an exact sample of softmax(logits / T) (gpt-fast's sampler) drawn from the default CUDA generator, which CUDA
graphs support (its offset advances at each replay). The prefill runs eagerly over the prompt (causal SDPA).
Models outside this scope (MoE, sliding windows, biases on o/MLP) stay on the transformers decode loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("qwen3", "qwen2", "llama")


def supports(model) -> str | None:
    """None when StaticDecoder runs this transformers model, else why not."""
    cfg = model.config
    if cfg.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model type {cfg.model_type!r} (static decode covers {', '.join(SUPPORTED_MODEL_TYPES)})"
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        return "sliding-window attention"
    layer = model.model.layers[0]
    if (
        getattr(layer.self_attn.o_proj, "bias", None) is not None
        or getattr(layer.mlp.down_proj, "bias", None) is not None
    ):
        return "biases on o_proj / MLP"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    return None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' Qwen3RMSNorm / LlamaRMSNorm: float32 statistics, cast back, then scale
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _pre(x, cos, sin, ln_w, w_qkv, b_qkv, qn_w, kn_w, shape):
    """RMSNorm, fused q/k/v projection, q/k RMSNorm (Qwen3), RoPE. x [T, hidden], cos/sin [T, D]."""
    heads, kv, d, eps = shape
    t = x.shape[0]
    qkv = F.linear(rms_norm(x, ln_w, eps), w_qkv, b_qkv)
    q, k, v = qkv.split([heads * d, kv * d, kv * d], dim=-1)
    q, k, v = q.reshape(t, heads, d), k.reshape(t, kv, d), v.reshape(t, kv, d)
    if qn_w is not None:
        q, k = rms_norm(q, qn_w, eps), rms_norm(k, kn_w, eps)
    c, s = cos[:, None, :], sin[:, None, :]
    return q * c + rotate_half(q) * s, k * c + rotate_half(k) * s, v


def _post(x, o, wo, ln_w, w_gu, wd, eps):
    """o projection, residual, RMSNorm, SwiGLU MLP (fused gate/up), residual."""
    x = x + F.linear(o, wo)
    g, u = F.linear(rms_norm(x, ln_w, eps), w_gu).chunk(2, dim=-1)
    return x + F.linear(F.silu(g) * u, wd)


def _attn_mm(q, k, v, mask):
    """Attention as two batched GEMMs and a masked softmax (float32): q [B, kv, G, D], k/v [B, kv, S, D]."""
    s = torch.matmul(q, k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.matmul(p.to(v.dtype), v)


def _head(x, norm_w, head_w, eps):
    return F.linear(rms_norm(x, norm_w, eps), head_w).float()


class StaticDecoder:
    """See the module doc. One decoder per (model, batch size, max_len); `generate` runs prompts through it."""

    def __init__(
        self, model, batch: int, max_len: int, *, compile: bool = False, graphs: bool = False, attn: str = "mm"
    ):
        why = supports(model)
        if why is not None:
            raise ValueError(f"static decode does not run {why}")
        cfg = model.config
        self.model = model
        self.batch = batch
        self.max_len = -(-max_len // 64) * 64  # whole blocks for the attention kernels
        p = model.lm_head.weight
        self.device, self.dtype = p.device, p.dtype
        self.heads = cfg.num_attention_heads
        self.kv = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.d = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.shape = (self.heads, self.kv, self.d, self.eps)
        self.layers = []
        with torch.no_grad():
            for layer in model.model.layers:
                a, m = layer.self_attn, layer.mlp
                bq = [getattr(lin, "bias", None) for lin in (a.q_proj, a.k_proj, a.v_proj)]
                self.layers.append(
                    dict(
                        ln=layer.input_layernorm.weight,
                        qkv=torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
                        b_qkv=None if bq[0] is None else torch.cat(bq),
                        qn=getattr(getattr(a, "q_norm", None), "weight", None),
                        kn=getattr(getattr(a, "k_norm", None), "weight", None),
                        o=a.o_proj.weight,
                        ln2=layer.post_attention_layernorm.weight,
                        gu=torch.cat([m.gate_proj.weight, m.up_proj.weight]),
                        down=m.down_proj.weight,
                    )
                )
            pos = torch.arange(self.max_len, device=self.device)
            probe = torch.zeros(1, device=self.device, dtype=self.dtype)
            cos, sin = model.model.rotary_emb(probe, pos[None])  # transformers' RoPE (scaling variants included)
            self.cos, self.sin = cos[0].to(self.dtype), sin[0].to(self.dtype)  # [max_len, D]
        cache_shape = (batch, self.kv, self.max_len, self.d)
        self.k_cache = [torch.zeros(cache_shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.v_cache = [torch.zeros(cache_shape, device=self.device, dtype=self.dtype) for _ in self.layers]
        self.positions = pos
        if attn not in ("sdpa", "mm"):
            raise ValueError(f"unknown decode attention {attn!r} (sdpa or mm)")
        self.attn = attn
        self._pre, self._post, self._head, self._attn_mm = _pre, _post, _head, _attn_mm
        if compile:
            self._pre = torch.compile(_pre)
            self._post = torch.compile(_post)
            self._head = torch.compile(_head)
            self._attn_mm = torch.compile(_attn_mm)
        self.graphs = graphs and self.device.type == "cuda"
        # step state, static addresses (the CUDA graph reads and writes these in place)
        self.tok = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.pos = torch.zeros(1, dtype=torch.long, device=self.device)
        self.finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.logits = None
        self.eos = torch.tensor([-1], device=self.device)
        self.fill = 0
        self.temperature = 0.0
        self._graph = None
        self._graph_key = None

    # --- forward pieces ---------------------------------------------------------------------------------------
    def _attn_decode(self, q, i, mask):
        """q [B, H, D] of the query at self.pos over cache i -> [B, H * D]."""
        b = q.shape[0]
        q4 = q.view(b, self.kv, self.heads // self.kv, self.d)
        if self.attn == "sdpa":
            o = F.scaled_dot_product_attention(q4, self.k_cache[i], self.v_cache[i], mask)
        else:
            o = self._attn_mm(q4, self.k_cache[i], self.v_cache[i], mask)
        return o.reshape(b, self.heads * self.d)

    def _forward_step(self, tok):
        """One decode step at position self.pos for every row: tok [B] -> logits [B, V] (float32)."""
        x = F.embedding(tok, self.model.model.embed_tokens.weight)
        cos = self.cos.index_select(0, self.pos).expand(tok.shape[0], -1)
        sin = self.sin.index_select(0, self.pos).expand(tok.shape[0], -1)
        mask = (self.positions <= self.pos)[None, None, None, :]  # [1, 1, 1, S]: the filled positions
        for i, w in enumerate(self.layers):
            q, k, v = self._pre(x, cos, sin, w["ln"], w["qkv"], w["b_qkv"], w["qn"], w["kn"], self.shape)
            self.k_cache[i].index_copy_(2, self.pos, k[:, :, None])
            self.v_cache[i].index_copy_(2, self.pos, v[:, :, None])
            x = self._post(x, self._attn_decode(q, i, mask), w["o"], w["ln2"], w["gu"], w["down"], self.eps)
        return self._head(x, self.model.model.norm.weight, self.model.lm_head.weight, self.eps)

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """Run the prompt [B, P] (eager), fill the cache at 0..P-1 -> logits of the last position [B, V] (fp32)."""
        b, p = prompt.shape
        if b != self.batch or p >= self.max_len:
            raise ValueError(
                f"prompt {tuple(prompt.shape)} does not fit the decoder (batch {self.batch}, max {self.max_len})"
            )
        x = F.embedding(prompt.reshape(-1), self.model.model.embed_tokens.weight)  # [B * P, hidden]
        cos = self.cos[:p].repeat(b, 1)
        sin = self.sin[:p].repeat(b, 1)
        for i, w in enumerate(self.layers):
            q, k, v = _pre(x, cos, sin, w["ln"], w["qkv"], w["b_qkv"], w["qn"], w["kn"], self.shape)
            q, k, v = (t.view(b, p, -1, self.d).transpose(1, 2) for t in (q, k, v))  # [B, heads, P, D]
            self.k_cache[i][:, :, :p].copy_(k)
            self.v_cache[i][:, :, :p].copy_(v)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.kv != self.heads)
            x = _post(x, o.transpose(1, 2).reshape(b * p, -1), w["o"], w["ln2"], w["gu"], w["down"], self.eps)
        last = x.view(b, p, -1)[:, -1]
        return _head(last, self.model.model.norm.weight, self.model.lm_head.weight, self.eps)

    # --- sampling and the step ------------------------------------------------------------------------------------
    def _sample(self, logits):
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1)

    def _step(self):
        """Consume self.tok at self.pos; write the next token into self.tok; advance pos (graph-capturable)."""
        logits = self._forward_step(self.tok)
        new = self._sample(logits)
        new = torch.where(self.finished, torch.full_like(new, self.fill), new)
        self.lengths.add_((~self.finished).long())
        self.finished.logical_or_(torch.isin(new, self.eos))
        self.tok.copy_(new)
        self.pos.add_(1)
        return logits

    def step(self) -> torch.Tensor:
        """One decode step (graph replay when captured); returns this step's logits [B, V] (a static buffer
        when graphed: copy it to keep it)."""
        if not self.graphs:
            return self._step()
        if self._graph is None or self._graph_key != (self.temperature,):
            self._capture()
        self._graph.replay()
        return self.logits

    def _capture(self):
        # warm-up and capture run steps: they write the cache past pos (masked out, overwritten before it is read)
        # and move the step state, which is put back afterwards
        saved = [t.clone() for t in (self.tok, self.pos, self.finished, self.lengths)]
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):  # warm-up: compile, cuBLAS handles, autotuning
                self._step()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._step()
        self._graph, self._graph_key = graph, (self.temperature,)
        for t, v in zip((self.tok, self.pos, self.finished, self.lengths), saved, strict=True):
            t.copy_(v)

    def start(self, first: torch.Tensor, pos: int, eos: list[int], temperature: float) -> None:
        """Set the step state after a prefill of `pos` tokens whose sampled next tokens are `first` [B]."""
        fill = eos[0] if eos else 0
        eos_t = torch.tensor(eos or [-1], device=self.device)
        if self.eos.shape != eos_t.shape or not torch.equal(self.eos, eos_t) or fill != self.fill:
            self.eos, self.fill = eos_t, fill
            self._graph = None  # the graph holds the EOS tensor and fill value
        if temperature != self.temperature:
            self.temperature = temperature
            self._graph = None
        self.tok.copy_(first)
        self.pos.fill_(pos)
        self.finished.copy_(torch.isin(first, self.eos))
        self.lengths.fill_(1)
        if self.graphs and self._graph is None:
            self._capture()
