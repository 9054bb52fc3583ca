"""`--weights` loads local safetensors by transformers parameter name; a mismatching file is BadConfig."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from trainbench.trainer.bench import run_bench
from trainbench.trainer.config import BadConfig, JobConfig
from trainbench.trainer.models.hf import build_model
from trainbench.trainer.specs import resolve_model


def cfg(weights: str) -> JobConfig:
    return JobConfig(
        model="tiny-qwen3", seq_len=128, steps=1, warmup_steps=0, metrics_port=-1, device="cpu", weights=weights
    )


def test_loaded_weights_are_used(tmp_path):
    spec = resolve_model("tiny-qwen3")
    model = build_model(spec, torch.device("cpu"), torch.float32)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, str(tmp_path / "model.safetensors"))
    res = run_bench(cfg(str(tmp_path)))  # a directory of *.safetensors
    # all-zero weights: every logit is 0, so the first loss is exactly log(vocab)
    assert res["losses"][0] == pytest.approx(math.log(spec.vocab), rel=1e-6)


def test_mismatching_weights_are_bad_config(tmp_path):
    save_file({"not.a.weight": torch.zeros(3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(BadConfig, match="does not match"):
        run_bench(cfg(str(tmp_path / "x.safetensors")))
