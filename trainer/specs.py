"""Model specs shipped with trainbench, and the FLOPs they cost. Torch-free.

Each model is a Hugging Face `config.json` in `configs/` (plus `_name` and `_hf_name`), so the same file
builds the transformers model and drives the arithmetic here. FLOPs follow prime-rl's definitions:

    FLOPs/token = 6 * N_active + 12 * L * H * q * T            (q = hidden / heads, T = packed length)
    LoRA:         4 * N_active + 6 * N_adapter + 12 * L * H * q * T

N_active counts the attention and MLP projections (for MoE: the router and the active experts) and the
LM head once; embeddings and norms are not counted.

The work actually done (`done_flops_split`: GEMM and attention parts) counts causal attention within each
document with the real head_dim; `floor_seconds` and `pct_of_floor` price it at a device's measured ceilings
(trainer/calibrate.py): floor = GEMM FLOPs / GEMM ceiling + attention FLOPs / attention ceiling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from trainbench.trainer.contract import DEFAULT_LORA_TARGETS


class UnknownModelError(ValueError):
    """A model name that is neither a shipped config nor a path to a config.json."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # short name, e.g. qwen3-0.6b
    hf_name: str  # Hugging Face name, e.g. Qwen/Qwen3-0.6B
    config: dict  # the Hugging Face config (without the underscore keys)

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @property
    def is_moe(self) -> bool:
        return "num_experts" in self.config

    @property
    def hidden(self) -> int:
        return self.config["hidden_size"]

    @property
    def layers(self) -> int:
        return self.config["num_hidden_layers"]

    @property
    def heads(self) -> int:
        return self.config["num_attention_heads"]

    @property
    def kv_heads(self) -> int:
        return self.config.get("num_key_value_heads", self.heads)

    @property
    def head_dim(self) -> int:
        return self.config.get("head_dim") or self.hidden // self.heads

    @property
    def vocab(self) -> int:
        return self.config["vocab_size"]

    def _attn_params(self) -> int:
        h, d = self.hidden, self.head_dim
        q = h * self.heads * d
        kv = 2 * h * self.kv_heads * d
        o = self.heads * d * h
        return q + kv + o

    def _mlp_params(self, active: bool) -> int:
        h = self.hidden
        if not self.is_moe:
            return 3 * h * self.config["intermediate_size"]
        experts = self.config["num_experts_per_tok"] if active else self.config["num_experts"]
        router = h * self.config["num_experts"]
        return router + experts * 3 * h * self.config["moe_intermediate_size"]

    def n_active(self) -> int:
        """Parameters a token passes through (attention + MLP projections + LM head)."""
        per_layer = self._attn_params() + self._mlp_params(active=True)
        return self.layers * per_layer + self.hidden * self.vocab

    def n_total(self) -> int:
        """All parameters, embeddings and norms included (memory planning)."""
        per_layer = self._attn_params() + self._mlp_params(active=False) + 2 * self.hidden
        if self.model_type == "qwen3" or self.model_type == "qwen3_moe":
            per_layer += 2 * self.head_dim  # q_norm, k_norm
        emb = self.hidden * self.vocab
        head = 0 if self.config.get("tie_word_embeddings") else self.hidden * self.vocab
        return self.layers * per_layer + emb + head + self.hidden

    def lora_params(self, rank: int, targets=DEFAULT_LORA_TARGETS) -> int:
        """Adapter parameters of LoRA rank `rank` on `targets` (routed experts are not adapted)."""
        h, d = self.hidden, self.head_dim
        shapes = {
            "q_proj": (h, self.heads * d),
            "k_proj": (h, self.kv_heads * d),
            "v_proj": (h, self.kv_heads * d),
            "o_proj": (self.heads * d, h),
        }
        if not self.is_moe:
            i = self.config["intermediate_size"]
            shapes.update({"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)})
        per_layer = sum(rank * (a + b) for name, (a, b) in shapes.items() if name in targets)
        return self.layers * per_layer

    def attention_flops_per_token(self, seq_len: int) -> int:
        q = self.hidden // self.heads
        return 12 * self.layers * self.heads * q * seq_len

    def flops_per_token(self, seq_len: int, lora_rank: int | None = None, lora_targets=DEFAULT_LORA_TARGETS) -> int:
        attn = self.attention_flops_per_token(seq_len)
        if lora_rank:
            return 4 * self.n_active() + 6 * self.lora_params(lora_rank, lora_targets) + attn
        return 6 * self.n_active() + attn

    def causal_attention_flops(self, doc_lens) -> int:
        """Training FLOPs (fwd + bwd = 3 x fwd) of attention over one packed sequence as it is really computed:
        causal, within each document, with the real head_dim. Per layer and head, a document of length d costs
        2 GEMMs (QK^T, PV) x 2 FLOPs x d(d+1)/2 score entries x head_dim forward."""
        pairs = sum(int(d) * (int(d) + 1) // 2 for d in doc_lens)
        return 3 * 2 * 2 * pairs * self.head_dim * self.heads * self.layers

    def done_flops_split(
        self, doc_lens, lora_rank: int | None = None, lora_targets=DEFAULT_LORA_TARGETS
    ) -> tuple[float, float]:
        """(GEMM, attention) training FLOPs per token of the work actually done on a packed sequence of documents
        `doc_lens`: the linear layers (projections, MLP or routed experts, LM head; LoRA: frozen weights' 4 N plus
        the adapters' 6 N) run as GEMMs, attention as causal attention within each document. The floor of a step
        (`floor_seconds`) prices each part at its own measured ceiling."""
        tokens = sum(int(d) for d in doc_lens)
        gemm = 4 * self.n_active() + 6 * self.lora_params(lora_rank, lora_targets) if lora_rank else 6 * self.n_active()
        return float(gemm), self.causal_attention_flops(doc_lens) / max(tokens, 1)

    def done_flops_per_token(self, doc_lens, lora_rank: int | None = None, lora_targets=DEFAULT_LORA_TARGETS) -> float:
        """FLOPs per token of the work actually done on a packed sequence of documents `doc_lens` (the honest
        MFU's numerator; the sum of `done_flops_split`); `flops_per_token` is prime-rl's figure, which counts full
        attention over the whole packed length with head_dim = hidden / heads."""
        return sum(self.done_flops_split(doc_lens, lora_rank, lora_targets))


def causal_attention_fwd_flops(batch: int, heads: int, seq_len: int, head_dim: int) -> float:
    """Forward FLOPs of causal attention over one sequence per row (the calibration's count, trainer/calibrate.py):
    2 GEMMs (QK^T, PV) x 2 FLOPs per multiply-add x b*h*s*s*d, halved by the causal mask: 2*2*b*h*s*s*d/2.
    Training (forward + backward) counts 3x this, as `causal_attention_flops` does."""
    return 2 * 2 * batch * heads * seq_len * seq_len * head_dim / 2


def floor_seconds(gemm_flops: float, attention_flops: float, gemm_flops_per_s: float, attn_flops_per_s: float) -> float:
    """The best time a device can do this work in: each part at its measured ceiling (FLOP/s of one device),
    floor = GEMM FLOPs / GEMM ceiling + attention FLOPs / attention ceiling."""
    return gemm_flops / gemm_flops_per_s + attention_flops / attn_flops_per_s


def pct_of_floor(floor_s: float, step_s: float) -> float:
    """'% of floor': the share of attainable speed a step reached, floor / measured step time * 100 (100: the
    step ran as fast as its GEMMs and attention can run on this device; above 100 cannot be real)."""
    return 100.0 * floor_s / step_s


def _normalise(name: str) -> str:
    return name.strip().lower().split("/")[-1]


@cache
def _shipped() -> dict[str, dict]:
    out = {}
    for entry in resources.files("trainbench.trainer").joinpath("configs").iterdir():
        if entry.name.endswith(".json"):
            cfg = json.loads(entry.read_text())
            out[cfg["_name"]] = cfg
    return out


def list_models() -> list[str]:
    return sorted(_shipped())


def resolve_model(name: str) -> ModelSpec:
    """`Qwen/Qwen3-0.6B`, `qwen3-0.6b` or a path to a config.json -> ModelSpec."""
    shipped = _shipped()
    key = _normalise(name)
    for cfg in shipped.values():
        if key in (cfg["_name"], _normalise(cfg["_hf_name"])):
            return _spec(cfg)
    if name.endswith(".json"):
        try:
            with open(name) as f:
                cfg = json.load(f)
        except OSError as e:
            raise UnknownModelError(f"cannot read model config {name!r}: {e.strerror}") from None
        cfg.setdefault("_name", _normalise(name).removesuffix(".json"))
        cfg.setdefault("_hf_name", name)
        return _spec(cfg)
    raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(list_models())} (or a path to a config.json)")


def _spec(cfg: dict) -> ModelSpec:
    clean = {k: v for k, v in cfg.items() if not k.startswith("_")}
    return ModelSpec(name=cfg["_name"], hf_name=cfg["_hf_name"], config=clean)
