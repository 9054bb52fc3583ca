"""A custom Qwen3 (and Llama) implementation for the fast path, in the spirit of torchtitan / prime-rl.

Parameter names are those of transformers' `Qwen3ForCausalLM` / `LlamaForCausalLM` (`model.embed_tokens.weight`,
`model.layers.0.self_attn.q_proj.weight`, ..., `lm_head.weight`), so a state dict loads either way.

What differs from the transformers modules:
- The micro-batch is flat: [B*T] tokens with document boundaries (`Batch.cu_seqlens`); attention is causal
  within each document through `trainbench.trainer.kernels.doc_attention` (cuDNN SDPA per document by default
  on CUDA, or FA2 varlen, or flex_attention), never through a dense [T, T] mask.
- Each block runs as two compiled regions around the attention call: (RMSNorm, q/k/v projections, q/k RMSNorm,
  RoPE) and (o projection, residual, RMSNorm, SwiGLU MLP, residual). Weights enter the compiled functions as
  tensors, so every layer reuses one compiled graph. LoRA is built in (frozen base weight + A/B, same math as
  peft's `Linear`: y = W x + (alpha / r) * B A x), so it compiles with the block.
- Activation checkpointing per block: `none`; `recompute` (whole block recomputed in backward); `selective`
  (the two compiled regions are recomputed, the attention output is kept, so attention never runs twice);
  `offload` (saved activations to pinned CPU memory); `auto` picks the fastest that the memory estimate fits.
- `hidden_states` returns the final-normed hidden states [B*T, hidden]; the loss runs the LM head in chunks.
- Each block is called as a module (`DecoderLayer.forward` runs `FastCausalLM._layer_body`), so FSDP2's
  `fully_shard` per block gathers its weights around it (`--dp fsdp`).
- Qwen3-MoE (`models/moe.py`): sparse blocks with experts optionally sharded over EP ranks (`parallel/ep.py`);
  context parallelism: `hidden_states(..., cp=CPShard)` runs attention over the whole sequence (`parallel/cp.py`).
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from trainbench.trainer.config import BadConfig
from trainbench.trainer.distributed import env_world
from trainbench.trainer.kernels import doc_attention
from trainbench.trainer.memory import FAST_AC_ORDER, FAST_MARGIN, fast_estimate_bytes, first_fit, per_rank_gib
from trainbench.trainer.models.base import Impl, resolve_dtype
from trainbench.trainer.models.hf import load_weights
from trainbench.trainer.models.moe import SparseMoeBlock, init_experts, is_moe_layer
from trainbench.trainer.parallel.cp import cp_attention
from trainbench.trainer.parallel.ep import is_expert_param
from trainbench.trainer.parallel.mesh import get_layout

SUPPORTED_MODEL_TYPES = ("qwen3", "llama", "qwen3_moe")
QK_NORM_TYPES = ("qwen3", "qwen3_moe")
# q/k/v and gate/up as single GEMMs; TRAINBENCH_FAST_FUSE=0 runs them separately (A/B knob, read at import)
FUSE_GEMMS = os.environ.get("TRAINBENCH_FAST_FUSE", "1") != "0"
PROJ_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # transformers' Qwen3RMSNorm / LlamaRMSNorm exactly: float32 statistics, cast back, then scale.
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def linear(x: torch.Tensor, w: torch.Tensor, lora, scale: float) -> torch.Tensor:
    y = F.linear(x, w)
    if lora is not None:
        a, b = lora
        y = y + F.linear(F.linear(x, a), b) * scale
    return y


def _add_lora(y: torch.Tensor, x: torch.Tensor, lora, scale: float) -> torch.Tensor:
    if lora is None:
        return y
    a, b = lora
    return y + F.linear(F.linear(x, a), b) * scale


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps


class Linear(nn.Module):
    """nn.Linear without bias (state-dict key `weight`), optionally with a LoRA adapter (`lora_A`, `lora_B`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.lora_A: nn.Parameter | None = None
        self.lora_B: nn.Parameter | None = None
        self.lora_scale = 0.0

    def add_lora(self, rank: int, alpha: float) -> None:
        dev, dt = self.weight.device, self.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dt))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dt))
        if dev.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's default init (B = 0)
        self.lora_scale = alpha / rank

    @property
    def lora(self):
        return None if self.lora_A is None else (self.lora_A, self.lora_B)

    def forward(self, x):
        return linear(x, self.weight, self.lora, self.lora_scale)


class Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h, d = cfg["hidden_size"], _head_dim(cfg)
        self.q_proj = Linear(h, cfg["num_attention_heads"] * d)
        self.k_proj = Linear(h, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * d)
        self.v_proj = Linear(h, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * d)
        self.o_proj = Linear(cfg["num_attention_heads"] * d, h)
        if cfg["model_type"] in QK_NORM_TYPES:
            self.q_norm = RMSNorm(d, cfg["rms_norm_eps"])
            self.k_norm = RMSNorm(d, cfg["rms_norm_eps"])
        else:
            self.q_norm = self.k_norm = None


class MLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = Linear(h, i)
        self.up_proj = Linear(h, i)
        self.down_proj = Linear(i, h)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: dict, idx: int = 0, ep=None):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = SparseMoeBlock(cfg, ep) if is_moe_layer(cfg, idx) else MLP(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, x, run):
        # the block's math lives in FastCausalLM._layer_body; calling the block as a module lets FSDP2
        # (fully_shard per block) gather its weights around it
        return run(self, x)


class Backbone(nn.Module):
    def __init__(self, cfg: dict, ep=None):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, ep) for i in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class FastCausalLM(nn.Module):
    """Qwen3ForCausalLM / LlamaForCausalLM / Qwen3MoeForCausalLM parameters, flat packed forward (see the module
    doc). `ep`: a `parallel.ep.EPGroup` to shard the experts of MoE layers over (None: all experts here)."""

    def __init__(self, cfg: dict, ep=None):
        super().__init__()
        if cfg["model_type"] not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"no fast implementation for model_type {cfg['model_type']!r}")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ValueError("the fast implementation has no projection biases")
        self.cfg = dict(cfg)
        self.model = Backbone(cfg, ep)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg.get("tie_word_embeddings"):
            self.lm_head.weight = self.model.embed_tokens.weight
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads", self.heads)
        self.head_dim = _head_dim(cfg)
        self.eps = cfg["rms_norm_eps"]
        self._rotary = None  # transformers' rotary embedding (RoPE scaling variants included), built lazily
        # runtime options (set by configure())
        self.attn_backend = "sdpa"
        self.gqa = "native"
        self.ac = "none"
        self.compiled = False
        self._pre = _pre_attn
        self._post = _post_attn
        self._post_res = _post_attn_res

    # --- setup ----------------------------------------------------------------------------------------------
    def configure(self, attn_backend: str = "sdpa", ac: str = "none", compile: bool = False, gqa: str = "native"):
        if attn_backend not in doc_attention.DOC_BACKENDS:
            raise ValueError(f"unknown attention backend {attn_backend!r} for the fast implementation")
        if ac not in ("none", "recompute", "selective", "offload"):
            raise ValueError(f"unknown activation checkpointing mode {ac!r}")
        self.attn_backend, self.ac, self.gqa = attn_backend, ac, gqa
        self.compiled = compile
        if compile:
            import torch._dynamo

            # every layer reuses one graph per shape; several runs in one process (benchmarks) add shapes
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self._pre = torch.compile(_pre_attn, dynamic=False)
            self._post = torch.compile(_post_attn, dynamic=False)
            self._post_res = torch.compile(_post_attn_res, dynamic=False)
        else:
            self._pre, self._post, self._post_res = _pre_attn, _post_attn, _post_attn_res
        return self

    def add_lora(self, rank: int, alpha: float, targets) -> int:
        """Freeze everything, add LoRA adapters on `targets` (projection names). Returns the adapter count."""
        for p in self.parameters():
            p.requires_grad_(False)
        n = 0
        for layer in self.model.layers:
            for mod in (layer.self_attn, layer.mlp):
                for name in PROJ_NAMES:
                    if name in targets and hasattr(mod, name):
                        getattr(mod, name).add_lora(rank, alpha)
                        n += 1
        return n

    def rotary(self):
        if self._rotary is None:
            from transformers import AutoConfig

            hf_cfg = AutoConfig.for_model(**self.cfg)
            if self.cfg["model_type"] == "qwen3":
                from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding as Rotary
            elif self.cfg["model_type"] == "qwen3_moe":
                from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeRotaryEmbedding as Rotary
            else:
                from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as Rotary
            self._rotary = [Rotary(hf_cfg).to(self.lm_head.weight.device)]  # a list: not a submodule
        return self._rotary[0]

    # --- forward --------------------------------------------------------------------------------------------
    def hidden_states(
        self, input_ids, position_ids, cu_seqlens, max_seqlen: int, doc_ids=None, cp=None
    ) -> torch.Tensor:
        """Final-normed hidden states [N, hidden] of the flattened micro-batch. `cp`: a `parallel.cp.CPShard`
        when the tokens are this rank's share of the sequence (context parallelism)."""
        ids = input_ids.reshape(-1)
        x = F.embedding(ids, self.model.embed_tokens.weight)
        cos, sin = self.rotary()(x, position_ids.reshape(1, -1))
        cos, sin = cos[0], sin[0]  # [N, D]
        attn = self._attention_fn(cu_seqlens, max_seqlen, doc_ids, cp)
        ctx = (
            torch.autograd.graph.save_on_cpu(pin_memory=True)
            if self.ac == "offload" and torch.is_grad_enabled()
            else contextlib.nullcontext()
        )
        with ctx:
            for layer in self.model.layers:
                x = self._layer(layer, x, cos, sin, attn)
        return rms_norm(x, self.model.norm.weight, self.eps)

    def forward(self, input_ids, position_ids, cu_seqlens, max_seqlen: int, doc_ids=None):
        """Logits [N, vocab] (small inputs and tests only: the bench loss never builds full logits)."""
        return self.lm_head(self.hidden_states(input_ids, position_ids, cu_seqlens, max_seqlen, doc_ids))

    def _attention_fn(self, cu_seqlens, max_seqlen, doc_ids, cp=None):
        backend = self.attn_backend
        scale = None
        if cp is not None:
            return lambda q, k, v: cp_attention(q, k, v, cp, backend, scale, self.gqa)
        if backend == "varlen":
            return lambda q, k, v: doc_attention.varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale)
        if backend == "fa4":
            return lambda q, k, v: doc_attention.fa4_attention(q, k, v, cu_seqlens, max_seqlen, scale)
        if backend == "flex":
            mask = doc_attention.document_block_mask(doc_ids)
            return lambda q, k, v: doc_attention.flex_attention(q, k, v, mask, scale)
        bounds = [int(b) for b in cu_seqlens.tolist()]
        return lambda q, k, v: doc_attention.sdpa_per_document(q, k, v, bounds, backend, self.gqa, scale)

    def _layer_args(self, layer):
        a, m = layer.self_attn, layer.mlp
        if isinstance(m, SparseMoeBlock):
            return self._moe_layer_args(layer)
        pre_w, pre_lora, _, _, _ = self._dense_attn_args(layer)
        post_w = (a.o_proj.weight, layer.post_attention_layernorm.weight, m.gate_proj.weight, m.up_proj.weight)
        post_w = (*post_w, m.down_proj.weight)
        post_lora = (a.o_proj.lora, m.gate_proj.lora, m.up_proj.lora, m.down_proj.lora)
        return pre_w, pre_lora, post_w, post_lora, a.q_proj.lora_scale

    def _moe_layer_args(self, layer):
        pre_w, pre_lora, _, _, ls = self._dense_attn_args(layer)
        a = layer.self_attn
        return pre_w, pre_lora, (a.o_proj.weight, layer.post_attention_layernorm.weight), (a.o_proj.lora,), ls

    def _dense_attn_args(self, layer):
        a = layer.self_attn
        pre_w = (
            layer.input_layernorm.weight,
            a.q_proj.weight,
            a.k_proj.weight,
            a.v_proj.weight,
            None if a.q_norm is None else a.q_norm.weight,
            None if a.k_norm is None else a.k_norm.weight,
        )
        return pre_w, (a.q_proj.lora, a.k_proj.lora, a.v_proj.lora), None, None, a.q_proj.lora_scale

    def _layer(self, layer, x, cos, sin, attn):
        return layer(x, lambda layer_, x_: self._layer_body(layer_, x_, cos, sin, attn))

    def _layer_body(self, layer, x, cos, sin, attn):
        pre_w, pre_lora, post_w, post_lora, ls = self._layer_args(layer)
        shape = (self.heads, self.kv_heads, self.head_dim, self.eps, ls)

        def pre(x_):
            return self._pre(x_, cos, sin, pre_w, pre_lora, shape)

        moe = layer.mlp if isinstance(layer.mlp, SparseMoeBlock) else None

        def post(x_, o_):
            if moe is not None:  # attention output + residual + norm (compiled), then the MoE block (eager)
                x_, h_ = self._post_res(x_, o_, post_w, post_lora, shape)
                return x_ + moe(h_)
            return self._post(x_, o_, post_w, post_lora, shape)

        def block(x_):
            q, k, v = pre(x_)
            o = attn(q, k, v)
            return post(x_, o)

        if self.ac == "recompute" and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        if self.ac == "selective" and torch.is_grad_enabled():
            q, k, v = checkpoint(pre, x, use_reentrant=False)
            o = attn(q, k, v)
            return checkpoint(post, x, o, use_reentrant=False)
        return block(x)


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def _pre_attn(x, cos, sin, weights, loras, shape):
    """RMSNorm, q/k/v projections (+LoRA), q/k RMSNorm (Qwen3), RoPE. x [N, hidden] -> q [N,H,D], k, v [N,KV,D]."""
    ln_w, wq, wk, wv, qn_w, kn_w = weights
    heads, kv_heads, d, eps, ls = shape
    n = x.shape[0]
    h = rms_norm(x, ln_w, eps)
    # one GEMM for q, k and v (hidden 1024 makes three separate ones small); LoRA terms added per projection
    if FUSE_GEMMS:
        qkv = F.linear(h, torch.cat([wq, wk, wv]))
        q, k, v = qkv.split([wq.shape[0], wk.shape[0], wv.shape[0]], dim=-1)
    else:
        q, k, v = F.linear(h, wq), F.linear(h, wk), F.linear(h, wv)
    q, k, v = (_add_lora(t, h, lo, ls) for t, lo in zip((q, k, v), loras, strict=True))
    q = q.reshape(n, heads, d)
    k = k.reshape(n, kv_heads, d)
    v = v.reshape(n, kv_heads, d)
    if qn_w is not None:
        q = rms_norm(q, qn_w, eps)
        k = rms_norm(k, kn_w, eps)
    c, s = cos[:, None, :], sin[:, None, :]
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    return q, k, v


def _post_attn(x, o, weights, loras, shape):
    """o projection (+LoRA), residual, RMSNorm, SwiGLU MLP (+LoRA), residual."""
    wo, ln_w, wg, wu, wd = weights
    heads, kv_heads, d, eps, ls = shape
    n = x.shape[0]
    x = x + linear(o.reshape(n, heads * d), wo, loras[0], ls)
    h = rms_norm(x, ln_w, eps)
    if FUSE_GEMMS:
        gu = F.linear(h, torch.cat([wg, wu]))  # gate and up in one GEMM
        g, u = gu.split([wg.shape[0], wu.shape[0]], dim=-1)
    else:
        g, u = F.linear(h, wg), F.linear(h, wu)
    g, u = _add_lora(g, h, loras[1], ls), _add_lora(u, h, loras[2], ls)
    return x + linear(F.silu(g) * u, wd, loras[3], ls)


def _post_attn_res(x, o, weights, loras, shape):
    """o projection (+LoRA), residual, RMSNorm -> (residual stream, normed input of the MoE block)."""
    wo, ln_w = weights
    heads, kv_heads, d, eps, ls = shape
    n = x.shape[0]
    x = x + linear(o.reshape(n, heads * d), wo, loras[0], ls)
    return x, rms_norm(x, ln_w, eps)


def init_like_transformers(model: FastCausalLM, std: float = 0.02, seed: int | None = None) -> None:
    """Random init as transformers' _init_weights does for these models: normal(0, std) for projections and
    embeddings, ones for norms (LoRA A keeps peft's kaiming init, B zeros)."""
    gen = None
    if seed is not None:
        gen = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or is_expert_param(p):
                continue
            if name.endswith("norm.weight") or "layernorm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=gen)
    init_experts(model, std, seed)


# --- bench-mode integration (trainbench.trainer.models.build_impl) ------------------------------------------

ATTN_FOR_FAST = {  # --attn -> doc_attention backend
    "sdpa": "sdpa",
    "sdpa-cudnn": "sdpa-cudnn",
    "sdpa-flash": "sdpa-flash",
    "sdpa-efficient": "sdpa-efficient",
    "sdpa-math": "sdpa-math",
    "flex": "flex",
    "varlen": "varlen",
    "fa4": "fa4",
}


def choose_ac(spec, device, tokens: int, n_trainable: int, loss_chunk: int) -> str:
    """`--ac auto`: the first of none, selective, recompute that `memory.fast_estimate_bytes` fits on the device."""
    if device.type != "cuda":
        return "none"
    total = torch.cuda.get_device_properties(device).total_memory
    return first_fit(
        lambda m: fast_estimate_bytes(spec, m, tokens, n_trainable, loss_chunk), FAST_AC_ORDER, total, "recompute"
    )


def choose_ac_parallel(cfg, spec, device) -> str:
    """`--ac auto` under CP/EP: the per-rank estimate of the dry-run plan (`memory.per_rank_gib`: T/cp tokens, E/ep
    experts, replicated non-expert weights), with the same margin and memory fraction as choose_ac."""
    if device.type != "cuda":
        return "none"
    total = torch.cuda.get_device_properties(device).total_memory
    per_mode = per_rank_gib(cfg, spec, env_world().size, sharded=False)
    return first_fit(lambda m: FAST_MARGIN * per_mode[m] * 2**30, FAST_AC_ORDER, total, "recompute")


_GQA_PROBE: dict = {}


def probe_gqa(backend: str, device) -> str:
    """'native' when the SDPA backend takes enable_gqa=True (forward and backward), else 'expand'."""
    key = (backend, str(device))
    if key not in _GQA_PROBE:
        try:
            q = torch.randn(256, 4, 128, device=device, dtype=torch.bfloat16, requires_grad=True)
            kv = torch.randn(256, 2, 128, device=device, dtype=torch.bfloat16)
            doc_attention.sdpa_per_document(q, kv, kv, [0, 256], backend, "native").sum().backward()
            _GQA_PROBE[key] = "native"
        except RuntimeError:
            _GQA_PROBE[key] = "expand"
    return _GQA_PROBE[key]


def resolve_attn(attn: str, device, docs_per_seq: int = 1, cp: int = 1) -> str:
    """`auto` on CUDA, the fastest kernel measured per architecture (docs/performance.md, H200):
    - Hopper/Blackwell with flash-attn-4 installed -> `fa4` (varlen over the documents): one document at 64k
      604 vs cuDNN's 555 TFLOP/s (0.6B rl-full 64k 51.6% vs 48.0% MFU); four packed documents 1.17-1.42x flex.
    - otherwise one document per sequence -> cuDNN SDPA (one shape, so its execution plan is built once);
      several documents -> flex_attention with a document BlockMask. cuDNN per document would be faster per
      call, but it builds a new execution plan for every new document length (+0.3 to 0.5 s per step whenever
      the lengths change, i.e. every step of real training).
    - under context parallelism (`cp` > 1) -> flex over the gathered keys in one call (parallel/cp.py); the
      other kernels have no CP form (layout.validate refuses them with --cp)."""
    if attn == "auto":
        if device.type != "cuda":
            return "sdpa"
        if cp > 1:
            return "flex"
        if doc_attention.fa4_usable(device):
            return "fa4"
        return "sdpa-cudnn" if docs_per_seq <= 1 else "flex"
    if attn not in ATTN_FOR_FAST:
        raise BadConfig(f"--attn {attn} is not available with --impl fast (choose from {', '.join(ATTN_FOR_FAST)})")
    return ATTN_FOR_FAST[attn]


def build(cfg, spec, device):
    if spec.model_type not in SUPPORTED_MODEL_TYPES:
        raise BadConfig(f"--impl fast does not support model type {spec.model_type!r}")
    backend = resolve_attn(cfg.attn, device, cfg.docs_per_seq, cfg.cp)
    if backend not in ("sdpa", "sdpa-math") and device.type != "cuda":
        raise BadConfig(f"--attn {cfg.attn} needs a CUDA device with --impl fast (this run is on {device.type})")
    if backend == "fa4":
        try:
            import flash_attn.cute  # noqa: F401
        except ImportError as e:
            raise BadConfig(f"--attn fa4 needs the flash-attn-4 package (pip install flash-attn-4): {e}") from e
    dtype = resolve_dtype(cfg.dtype, device)
    ep = None
    if cfg.ep > 1:
        ep = get_layout(cfg, env_world(), device).ep_group()
    try:
        with torch.device(device):
            model = FastCausalLM(spec.config, ep=ep).to(dtype)
    except ValueError as e:
        raise BadConfig(str(e)) from None
    init_like_transformers(model, seed=cfg.seed)
    if cfg.weights:
        load_weights(model, cfg.weights)
    if cfg.is_lora:
        model.add_lora(cfg.effective_lora_rank, cfg.effective_lora_alpha, cfg.lora_targets)
    model.train()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ac = cfg.ac
    if ac == "auto" and (cfg.cp > 1 or cfg.ep > 1):
        ac = choose_ac_parallel(cfg, spec, device)
    elif ac == "auto":
        ac = choose_ac(spec, device, cfg.micro_batch * cfg.seq_len, n_trainable, cfg.loss_chunk)
    gqa = probe_gqa(backend, device) if backend.startswith("sdpa") and device.type == "cuda" else "native"
    model.configure(attn_backend=backend, ac=ac, compile=cfg.compile and device.type == "cuda", gqa=gqa)

    class FastImpl(Impl):
        name = "fast"

        def __init__(self):
            self.module = model
            # FSDP2 shards each block (--dp fsdp); not under EP, whose experts are sharded by EP instead
            self.blocks = list(model.model.layers) if cfg.ep == 1 else []
            self.attn_backend = (
                ("cp-zigzag+" if cfg.cp > 1 else "") + backend + ("" if gqa == "native" else "+expand-kv")
            )
            self.ac = ac

        def hidden_states(self, batch) -> torch.Tensor:
            return model.hidden_states(
                batch.input_ids,
                batch.position_ids,
                batch.cu_seqlens,
                batch.max_seqlen,
                batch.doc_ids,
                getattr(batch, "cp", None),
            )

        @property
        def lm_head_weight(self) -> torch.Tensor:
            return model.lm_head.weight

    return FastImpl()
