import pytest

from trainbench.trainer.hardware import UnknownDeviceError, peak_flops
from trainbench.trainer.specs import UnknownModelError, list_models, resolve_model


def test_prime_rl_flops_per_token_qwen3_0_6b():
    # prime-rl's published figure for Qwen3-0.6B at T=1024
    assert resolve_model("Qwen/Qwen3-0.6B").flops_per_token(1024) == 3_928_227_840


@pytest.mark.parametrize("name", ["Qwen/Qwen3-0.6B", "qwen3-0.6b", "QWEN3-0.6B"])
def test_names_resolve(name):
    assert resolve_model(name).name == "qwen3-0.6b"


def test_all_required_models_ship():
    want = {"qwen3-0.6b", "qwen3-4b", "qwen3-8b", "qwen3-30b-a3b", "llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b"}
    want |= {"tiny-qwen3", "tiny-llama", "tiny-qwen3-moe"}
    assert want <= set(list_models())


def test_moe_counts_active_experts_only():
    m = resolve_model("qwen3-30b-a3b")
    assert 3.0e9 < m.n_active() < 3.6e9  # "A3B": ~3.3B active incl. LM head
    assert 29e9 < m.n_total() < 32e9


def test_lora_flops_formula():
    m = resolve_model("qwen3-0.6b")
    attn = m.attention_flops_per_token(16384)
    assert m.flops_per_token(16384, lora_rank=16) == 4 * m.n_active() + 6 * m.lora_params(16) + attn


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="unknown model 'gpt-17'"):
        resolve_model("gpt-17")


def test_peak_flops():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA RTX A6000") == 154.85e12
    assert peak_flops("whatever", override_tflops=100) == 100e12
    with pytest.raises(UnknownDeviceError, match="--peak-tflops"):
        peak_flops("Mystery GPU 9000")


def test_honest_mfu_of_a_packed_four_document_batch():
    """The work actually done on 4 documents of a 64k sequence: causal attention within each document with the
    real head_dim, against prime-rl's full attention over the packed length with hidden / heads."""
    spec = resolve_model("qwen3-4b")
    docs = [16384] * 4
    seq = sum(docs)
    prime = spec.flops_per_token(seq)
    done = spec.done_flops_per_token(docs)
    dense = 6 * spec.n_active()
    # attention ratio done / prime-rl: sum(d(d+1)/2) * head_dim over (T^2 * hidden / heads)
    pairs = sum(d * (d + 1) // 2 for d in docs)
    ratio = (pairs * spec.head_dim) / (seq * seq * (spec.hidden // spec.heads))
    assert (done - dense) == pytest.approx((prime - dense) * ratio, rel=1e-9)
    assert ratio == pytest.approx(1 / 8 * spec.head_dim / (spec.hidden // spec.heads), rel=1e-3)
    assert done < prime
    # one document: causal attention is (T + 1) / 2T of the full square
    one_attn = spec.done_flops_per_token([seq]) - dense
    q_ratio = spec.head_dim / (spec.hidden // spec.heads)
    assert one_attn == pytest.approx((prime - dense) * (seq + 1) / (2 * seq) * q_ratio, rel=1e-9)
