"""LoRA through peft for `rl-lora`.

Defaults: rank 16, alpha 32 (2 x rank), dropout 0, on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
the LM head and embeddings are never adapted. MoE models (Qwen3-MoE): attention projections and any dense MLP
layers (`mlp_only_layers`) are adapted; routed experts (fused expert weights, not `nn.Linear` modules) and the
router are not. A model with no `nn.Linear` whose name matches the targets has no LoRA support -> BadConfig.
"""

from __future__ import annotations

import torch

from trainbench.trainer.config import BadConfig, JobConfig


def matching_linears(model: torch.nn.Module, targets) -> list[str]:
    names = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets and "lm_head" not in name:
            names.append(name)
    return names


def apply_lora(model: torch.nn.Module, cfg: JobConfig) -> torch.nn.Module:
    """Wrap `model` with peft LoRA adapters; only the adapters require grad afterwards."""
    from peft import LoraConfig, get_peft_model

    targets = tuple(cfg.lora_targets)
    found = matching_linears(model, targets)
    if not found:
        raise BadConfig(f"model has no linear layers named {', '.join(targets)}: no LoRA support for rl-lora")
    lcfg = LoraConfig(
        r=cfg.effective_lora_rank,
        lora_alpha=cfg.effective_lora_alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=found,  # exact module names: routed experts / router / lm_head can never match
    )
    return get_peft_model(model, lcfg)


def adapter_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
