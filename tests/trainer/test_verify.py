"""Type verify: the pass@k estimator against brute force, the verifier on known-good and known-bad programs, code
extraction, the built-in prompt set's reference solutions, the scoring pipeline and a RAFT fine-tune step."""

from __future__ import annotations

import itertools
import shutil
from fractions import Fraction

import pytest
import torch

from trainbench.trainer import verify as V

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed (make tools installs it)")


def brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """The share of k-subsets of n samples (c of them correct) that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def test_pass_at_k_is_exact_against_brute_force():
    for n in range(1, 11):
        for c in range(n + 1):
            for k in range(1, n + 1):
                want = brute_pass_at_k(n, c, k)
                assert V.pass_at_k(n, c, k) == pytest.approx(float(want), abs=1e-12), (n, c, k)
    # not halo-forge's "at least one of the n compiles": pass@1 of 1 correct out of 8 is 1/8
    assert V.pass_at_k(8, 1, 1) == pytest.approx(0.125)
    assert V.ks_for(8) == [1, 2, 4, 8] and V.ks_for(5) == [1, 2, 4, 5] and V.ks_for(1) == [1]
    with pytest.raises(ValueError):
        V.pass_at_k(4, 1, 5)


GOOD = '#include <iostream>\nint main() { std::cout << "42" << std::endl; }\n'
FIXTURES = {
    "passed": GOOD,
    "passed-trailing-space": '#include <cstdio>\nint main() { std::printf("42  \\n\\n"); }\n',
    "wrong_output": '#include <iostream>\nint main() { std::cout << "41\\n"; }\n',
    "compile_error": "#include <iostream>\nint main() { std::cout << undeclared_name; }\n",
    "timeout": "int main() { volatile unsigned long x = 0; for (;;) x++; }\n",
    "memory": "#include <vector>\nint main() { std::vector<std::vector<char>> v; for (;;) v.emplace_back(1 << 20, 1); }\n",
    "crash": "int main() { volatile int* p = nullptr; *p = 1; return 0; }\n",
    "crash-exit-code": "int main() { return 3; }\n",
    "output_limit": '#include <cstdio>\nint main() { for (;;) std::fputs("xxxxxxxxxxxxxxx\\n", stdout); }\n',
    "no_code": "I cannot write that program.",
}


@pytest.fixture(scope="module")
def verifier():
    return V.Verifier(compile_timeout=60, run_timeout=1.0, memory_mib=128)


def test_verifier_classifies_each_fixture_exactly(verifier):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        got = dict(zip(FIXTURES, pool.map(lambda code: verifier.check(code, "42\n"), FIXTURES.values()), strict=True))
    for name, outcome in got.items():
        assert outcome.status == name.split("-")[0], (name, outcome)
    assert got["crash"].detail.startswith("signal ")
    assert got["crash-exit-code"].detail == "exit code 3"
    assert got["memory"].run_s < 5
    assert got["timeout"].run_s < 5
    assert got["compile_error"].compiled is False and got["wrong_output"].compiled is True
    assert "undeclared_name" in got["compile_error"].detail


def test_extract_code():
    text = "Here:\n```cpp\n#include <cstdio>\nint main() { return 0; }\n```\nDone."
    assert V.extract_code(text) == "#include <cstdio>\nint main() { return 0; }\n"
    two = "```text\nnot code\n```\n```\nint main() { return 1; }\n```"
    assert V.extract_code(two) == "int main() { return 1; }\n"
    assert V.extract_code("```c++\nint f();\n```") == "int f();\n"
    assert V.extract_code("sure: #include <x>\nint main(){}") == "#include <x>\nint main(){}"
    assert V.extract_code("no code at all") is None


def test_builtin_prompts_reference_solutions_pass(verifier):
    prompts = V.load_prompts()
    assert len(prompts) == 16
    cats = {p["category"] for p in prompts}
    assert cats == {"basic-io", "arithmetic", "arrays", "algorithms", "strings"}
    # each prompt's reference passes, and the reference of another prompt fails it (the outputs are all distinct)
    completions = {
        p["id"]: [f"```cpp\n{p['reference']}```", prompts[(i + 1) % 16]["reference"]] for i, p in enumerate(prompts)
    }
    s, records = V.evaluate(prompts, completions, verifier, workers=4)
    assert s["samples"] == 32 and s["outcomes"]["passed"] == 16 and s["outcomes"]["wrong_output"] == 16
    assert s["compile_rate"] == 1.0 and s["pass_rate"] == 0.5
    assert s["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert [r["status"] for r in records[:2]] == ["passed", "wrong_output"]


def test_scores_per_prompt_and_overall(verifier):
    prompts = V.load_prompts()[:2]
    ref0 = f"```cpp\n{prompts[0]['reference']}```"
    completions = {
        prompts[0]["id"]: [ref0, "garbage", "```cpp\nint main( {\n```", ref0],  # 2 of 4 pass, 3 compile
        prompts[1]["id"]: ["nothing", "nothing", "nothing", "nothing"],
    }
    s, _ = V.evaluate(prompts, completions, verifier)
    p0, p1 = s["prompts"]
    assert (p0["n"], p0["compiled"], p0["passed"]) == (4, 2, 2)
    assert p0["outcomes"] == {"passed": 2, "compile_error": 1, "no_code": 1}
    assert p0["pass_at_k"]["1"] == pytest.approx(0.5)
    assert p0["pass_at_k"]["2"] == pytest.approx(1 - 1 / 6)
    assert p0["pass_at_k"]["4"] == 1.0
    assert p1["pass_at_k"] == {"1": 0.0, "2": 0.0, "4": 0.0}
    assert s["pass_at_k"]["2"] == pytest.approx((1 - 1 / 6) / 2)
    assert s["compile_rate"] == pytest.approx(2 / 8)


def test_raft_finetune_lowers_the_loss_on_kept_samples():
    from trainbench.trainer.config import parse_args
    from trainbench.trainer.generate import build_eval_model
    from trainbench.trainer.specs import resolve_model

    cfg = parse_args(["--type", "verify", "--device", "cpu", "--steps", "8", "--lr", "3e-3"])
    spec = resolve_model("tiny-qwen3")
    torch.manual_seed(0)
    model, _ = build_eval_model(cfg, spec, torch.device("cpu"))
    tok = V.ByteTokenizer(spec.vocab)
    kept = [(tok.encode("prompt A:"), tok.encode("int main(){}")), (tok.encode("B?"), tok.encode("```cpp\nx\n```"))]
    losses = V.raft_finetune(model, kept, cfg, torch.device("cpu"))
    assert len(losses) == 8 and losses[-1] < losses[0] * 0.8
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def _tokenizer_dir(path):
    """A small byte-level BPE tokenizer with a chat template, saved like a model directory's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet)
    tok.train_from_iterator(["int main() { return 0; }", "#include <iostream>", "Write a C++ program"] * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}<s>"
    fast.save_pretrained(path)


def test_verify_with_weights_tokenizer_and_own_prompt_set(tmp_path):
    """--weights DIR (safetensors + tokenizer with a chat template) and --prompts FILE.jsonl."""
    import json

    from safetensors.torch import save_file

    from trainbench.trainer.bench import run_bench
    from trainbench.trainer.config import parse_args
    from trainbench.trainer.generate import build_eval_model
    from trainbench.trainer.specs import resolve_model

    wdir = tmp_path / "weights"
    wdir.mkdir()
    base = ["--model", "tiny-qwen3", "--device", "cpu", "--metrics-port", "-1"]
    torch.manual_seed(5)
    model, _ = build_eval_model(
        parse_args(["--type", "verify", *base]), resolve_model("tiny-qwen3"), torch.device("cpu")
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied, as HF saves
    save_file(state, str(wdir / "model.safetensors"))
    _tokenizer_dir(wdir)
    prompts = tmp_path / "p.jsonl"
    rows = [
        {"id": "a", "prompt": "Write a C++ program", "expected_output": "1\n"},
        {"id": "b", "prompt": "x", "expected_output": ""},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--type", "verify", *base, "--weights", str(wdir), "--prompts", str(prompts), "--samples", "3"]
    args += ["--new-tokens", "8", "--out-dir", str(tmp_path / "out")]
    r = run_bench(parse_args(args))
    v = r["verify"]
    assert v["tokenizer"] == "HFTokenizer" and v["prompts"] == 2 and v["prompt_set"] == str(prompts)
    assert v["cycles"][0]["score"]["samples"] == 6 and set(v["pass_at_k"]) == {"1", "2", "3"}
    lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["prompt_id"] for x in lines] == ["a"] * 3 + ["b"] * 3
    assert (tmp_path / "out" / "hardware.csv").read_text().startswith("time_s,power_w")


def test_raft_cycle_keeps_the_passing_samples_and_trains_on_them(tmp_path, monkeypatch):
    """The RAFT loop's bookkeeping with passing samples: a stand-in sampler (random weights pass nothing) writes the
    reference solution as the first of k samples; cycle 1 keeps exactly those and fine-tunes the real model."""
    from trainbench.trainer.bench import run_bench
    from trainbench.trainer.config import parse_args

    seen = []

    def sampler(model, tok, prompts, k, cfg, eos, device, generator, sync):
        seen.append(sum(float(p.detach().sum()) for p in model.parameters()))
        texts = {p["id"]: [f"```cpp\n{p['reference']}```"] + ["no code"] * (k - 1) for p in prompts}
        ids = {p["id"]: [(tok.encode(p["prompt"])[:32], tok.encode(t)[:64]) for t in texts[p["id"]]] for p in prompts}
        return texts, ids, {"tokens": 1, "seconds": 1.0, "tps": 1.0}

    import json

    monkeypatch.setattr(V, "sample_completions", sampler)
    four = tmp_path / "four.jsonl"
    four.write_text("".join(json.dumps(p) + "\n" for p in V.load_prompts()[:4]))
    args = ["--type", "verify", "--model", "tiny-qwen3", "--device", "cpu", "--metrics-port", "-1", "--samples", "3"]
    args += ["--raft-cycles", "1", "--steps", "2", "--lr", "1e-3", "--out-dir", str(tmp_path), "--prompts", str(four)]
    v = run_bench(parse_args(args))["verify"]
    c0, c1 = v["cycles"]
    assert c0["kept"] is None and c0["score"]["pass_rate"] == pytest.approx(1 / 3)
    assert c1["kept"] == 4 and len(c1["losses"]) == 2 and c1["losses"][1] < c1["losses"][0]
    assert seen[0] != seen[1]  # cycle 1 sampled from the fine-tuned weights
    assert v["pass_at_k"]["1"] == pytest.approx(1 / 3) and v["pass_at_k"]["3"] == 1.0
