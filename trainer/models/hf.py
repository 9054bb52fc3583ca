"""The transformers implementation: any architecture with a shipped config, random init, optional local weights.

The model is built from the shipped config (`AutoConfig.for_model`), directly on the target device in the run's
dtype (bf16 on GPU, fp32 on CPU unless `--dtype`). Packed documents: the packed `position_ids` (restarting at 0
per document) are passed with no attention mask; transformers' mask utilities then build a block-causal mask
(sdpa/eager), a block-sparse BlockMask (flex) or varlen boundaries (flash-attention), so no token attends across a
document boundary. `hidden_states()` runs the decoder stack (`model.model`) only; the LM head is applied by the
chunked loss (`losses.py`).
"""

from __future__ import annotations

import glob
import os

import torch

from trainbench.trainer import ac as ac_mod
from trainbench.trainer import attention
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.lora import apply_lora
from trainbench.trainer.models.base import Impl, resolve_dtype
from trainbench.trainer.specs import ModelSpec


def hf_config(spec: ModelSpec, attn_impl: str | None = None):
    from transformers import AutoConfig

    kw = {k: v for k, v in spec.config.items() if k not in ("model_type", "torch_dtype", "dtype")}
    try:
        cfg = AutoConfig.for_model(spec.model_type, **kw)
    except ValueError as e:
        raise BadConfig(f"transformers cannot build model type {spec.model_type!r}: {e}") from None
    if attn_impl:
        cfg._attn_implementation = attn_impl
    return cfg


def build_model(spec: ModelSpec, device: torch.device, dtype: torch.dtype, attn_impl: str | None = None):
    """The bare transformers causal LM, randomly initialised on `device` (meta: no allocation)."""
    from transformers import AutoModelForCausalLM

    hcfg = hf_config(spec, attn_impl)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(hcfg)
    finally:
        torch.set_default_dtype(prev)
    return model.to(dtype)


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Load local safetensors (a file, or a directory of *.safetensors) into `model` by parameter name."""
    from safetensors.torch import load_file

    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
    if not files or not all(os.path.isfile(f) for f in files):
        raise BadConfig(f"--weights {path!r}: no safetensors file found")
    state = {}
    for f in files:
        state.update(load_file(f, device="cpu"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and model.config.tie_word_embeddings)]
    if unexpected or missing:
        raise BadConfig(
            f"--weights {path!r} does not match the model: {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )


class HFImpl(Impl):
    name = "hf"

    def __init__(self, model, backbone, attn_choice: attention.AttnChoice, ac: str):
        self.module = model
        self.backbone = backbone
        self._attn = attn_choice
        self.attn_backend = attn_choice.label
        self.ac = ac
        self._causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model

    def hidden_states(self, batch) -> torch.Tensor:
        out = self.backbone(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False)
        h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return h.reshape(-1, h.shape[-1])

    @property
    def lm_head_weight(self) -> torch.Tensor:
        return self._causal_lm.get_output_embeddings().weight

    def context(self):
        return self._attn.context()


def build(cfg: JobConfig, spec: ModelSpec, device: torch.device) -> HFImpl:
    choice = attention.resolve(cfg.attn, device.type, cfg.docs_per_seq, cfg.seq_len)
    dtype = resolve_dtype(cfg.dtype, device)
    model = build_model(spec, device, dtype, choice.hf_impl)
    if cfg.weights:
        load_weights(model, cfg.weights)
    model.config.use_cache = False
    if cfg.is_lora:
        model = apply_lora(model, cfg)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    model.train()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.model
    blocks = list(backbone.layers)
    mode = cfg.ac
    if mode == "auto":
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        tokens = cfg.micro_batch * cfg.seq_len
        mode = ac_mod.choose_auto(spec, device, tokens, n_trainable, cfg.loss_chunk)
    ac_mod.apply_ac(blocks, mode, device.type)
    if cfg.compile:
        for block in blocks:
            block.compile()
    impl = HFImpl(model, backbone, choice, mode)
    impl.blocks = blocks
    return impl
