"""--micro-batch auto: the search finds the known largest size under a memory cap, caches it, and the run uses it."""

from __future__ import annotations

import json

import pytest
import torch

from trainbench.trainer import autobatch as A
from trainbench.trainer.config import BadConfig, parse_args
from trainbench.trainer.distributed import env_world
from trainbench.trainer.specs import resolve_model

CPU = torch.device("cpu")
BASE = ["--model", "tiny-qwen3", "--seq-len", "64", "--ac", "none", "--attn", "sdpa", "--device", "cpu"]
BASE += ["--metrics-port", "-1", "--steps", "1", "--warmup-steps", "0"]


@pytest.mark.parametrize("limit", [1, 7, 64, 100])
def test_search_is_doubling_then_bisection(limit):
    for largest in range(0, 41):
        found, tried = A.search(lambda m, t=largest: m <= t, limit=limit)
        assert found == min(largest, limit)
        assert len(tried) == len(set(tried)) and len(tried) <= 2 * max(1, largest).bit_length() + 2


def test_finds_the_largest_micro_batch_under_a_cap_and_caches_it(tmp_path):
    spec = resolve_model("tiny-qwen3")
    cfg = parse_args([*BASE, "--micro-batch", "auto", "--cache-dir", str(tmp_path)])
    # the ground truth, by brute force: each size's measured footprint
    fp = {m: A.trial_step(cfg, spec, CPU, m) for m in range(1, 7)}
    assert all(fp[m + 1] > fp[m] for m in range(1, 6))
    limit_gib = (fp[5] + fp[6]) / 2 / (1 - A.SAFETY_MARGIN) / 2**30  # 5 fits, 6 does not
    cfg = parse_args(
        [*BASE, "--micro-batch", "auto", "--cache-dir", str(tmp_path), "--memory-limit-gib", repr(limit_gib)]
    )
    cfg.batch_size = 12
    new, rec = A.resolve_auto(cfg, spec, CPU, env_world())
    assert rec["micro_batch"] == 5 and new.micro_batch == 5 and not rec["cached"]
    assert new.batch_size == 15 and new.grad_accum == 3  # rounded up to a multiple of the micro-batch
    assert [t["micro_batch"] for t in rec["trials"]] == [1, 2, 4, 8, 6, 5]
    assert [t["fits"] for t in rec["trials"]] == [True, True, True, False, False, True]
    assert rec["method"] == "cpu-footprint" and rec["discovery_s"] > 0
    data = json.loads((tmp_path / A.CACHE_FILE).read_text())
    assert len(data) == 1 and next(iter(data.values()))["micro_batch"] == 5
    again, rec2 = A.resolve_auto(cfg, spec, CPU, env_world())
    assert rec2["cached"] and again.micro_batch == 5
    # a different cap is a different key: searched again
    cfg2 = parse_args(
        [*BASE, "--micro-batch", "auto", "--cache-dir", str(tmp_path), "--memory-limit-gib", repr(limit_gib * 1.4)]
    )
    _, rec3 = A.resolve_auto(cfg2, spec, CPU, env_world())
    assert not rec3["cached"] and rec3["micro_batch"] > 5


def test_cpu_needs_a_cap_and_a_too_small_cap_is_out_of_memory(tmp_path):
    spec = resolve_model("tiny-qwen3")
    cfg = parse_args([*BASE, "--micro-batch", "auto", "--cache-dir", str(tmp_path)])
    with pytest.raises(BadConfig, match="memory-limit-gib"):
        A.resolve_auto(cfg, spec, CPU, env_world())
    cfg = parse_args([*BASE, "--micro-batch", "auto", "--cache-dir", str(tmp_path), "--memory-limit-gib", "1e-6"])
    with pytest.raises(torch.OutOfMemoryError):
        A.resolve_auto(cfg, spec, CPU, env_world())
    with pytest.raises(BadConfig):
        parse_args([*BASE, "--micro-batch", "auto", "--type", "generate"])
    with pytest.raises(BadConfig):
        parse_args([*BASE, "--micro-batch", "0"])


def test_bench_run_reports_the_size_found(tmp_path):
    from trainbench.trainer.bench import run_bench, type_table

    cfg = parse_args([*BASE, "--micro-batch", "auto", "--cache-dir", str(tmp_path), "--memory-limit-gib", "0.004"])
    r = run_bench(cfg)
    a = r["autobatch"]
    assert a["micro_batch"] >= 1 and r["config"]["micro_batch"] == a["micro_batch"]
    assert r["tokens_per_step"] == a["micro_batch"] * 64
    assert "micro-batch auto:" in type_table(r)


def test_two_ranks_agree_and_rank_0_caches(tmp_path):
    """torchrun, 2 CPU ranks (gloo): every rank runs the trials, the answer is rank 0's; a second run reads the
    cache on rank 0 and no rank searches."""
    import os
    import shutil
    import socket
    import subprocess
    import sys

    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert exe, "torchrun comes with torch"
    outs = []
    for i in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = tmp_path / f"r{i}.json"
        args = [exe, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
        args += ["-m", "trainbench.trainer", *BASE, "--micro-batch", "auto", "--memory-limit-gib", "0.003"]
        args += ["--cache-dir", str(tmp_path / "cache"), "--output", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        p = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stderr.count("micro-batch auto: 1 fits") == (1 if i == 0 else 0)  # rank 0 logs, once
        outs.append(json.loads(out.read_text()))
    first, second = (o["autobatch"] for o in outs)
    assert first["micro_batch"] == second["micro_batch"] >= 1 and outs[0]["world_size"] == 2
    assert not first["cached"] and second["cached"]
