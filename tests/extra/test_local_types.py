"""The types through the planner, the CRD and the local executor: generate and verify cases run end to end as real
trainer processes, the report shows their sections, and a case that cannot run is classified like a training one."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainbench.operator import api
from trainbench.operator.plan import plan
from trainbench.trainer.config import parse_args

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "manifests" / "crd.yaml").read_text())
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


@pytest.mark.parametrize("model, prop", [(api.Generate, "generate"), (api.Verify, "verify")])
def test_crd_blocks_match_the_api(model, prop):
    node = SPEC_SCHEMA["properties"][prop]
    assert set(node["properties"]) == {f.alias for f in model.model_fields.values()}
    built = model().model_dump(by_alias=True)
    assert {k: v["default"] for k, v in node["properties"].items()} == built
    assert all(v.get("description") for v in node["properties"].values())
    enum = SPEC_SCHEMA["properties"]["matrix"]["properties"]["types"]["items"]["enum"]
    assert enum == ["sft-full", "rl-full", "rl-lora", "generate", "verify"]
    for name in ("autoMicroBatch", "memoryLimitGib"):
        assert SPEC_SCHEMA["properties"][name]["description"]


def test_plan_passes_the_type_settings_to_the_trainer():
    spec = {
        "pools": [{"name": "cpu"}],
        "matrix": {"models": ["tiny-qwen3"], "types": ["sft-full", "generate", "verify"], "seqLens": [64]},
        "generate": {"batchSizes": [2, 4], "newTokens": 7, "temperature": 0.5},
        "verify": {"samples": 3, "raftCycles": 2, "runTimeoutSeconds": 1.5, "runMemoryMib": 64},
        "autoMicroBatch": True,
        "memoryLimitGib": 2.5,
    }
    spec["pools"] = [{"name": "cpu", "gpusPerNode": 8}]
    train, gen, ver = plan(spec)
    assert (train.gpus, gen.gpus, ver.gpus) == (8, 1, 1)  # generate/verify: one process on one GPU of the pool
    t, g, v = (parse_args(c.trainer_args(run="r")) for c in (train, gen, ver))
    assert t.micro_batch_auto and t.memory_limit_gib == 2.5 and not g.micro_batch_auto
    assert g.type == "generate" and g.gen_batch_sizes == (2, 4) and g.new_tokens == 7 and g.temperature == 0.5
    assert (v.samples, v.raft_cycles, v.run_timeout, v.run_memory_mib) == (3, 2, 1.5, 64)
    # the ids of training cases without auto stay what they were; settings change the other types' ids
    plain = plan({k: v for k, v in spec.items() if k not in ("generate", "autoMicroBatch", "memoryLimitGib")})
    assert plain[0].id != train.id and plain[1].id != gen.id and plain[2].id == ver.id
    assert (
        plan({"pools": [{"name": "cpu"}], "matrix": {"models": ["tiny-qwen3"], "seqLens": [64]}})[0].id == plain[0].id
    )


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed (make tools installs it)")
def test_local_executor_runs_generate_and_verify(tmp_path):
    manifest = {
        "apiVersion": "trainbench.dev/v1alpha1",
        "kind": "BenchmarkRun",
        "metadata": {"name": "types"},
        "spec": {
            "suite": "types",
            "pools": [{"name": "cpu", "hardware": "CPU"}],
            "matrix": {
                "models": ["tiny-qwen3"],
                "types": ["generate", "verify"],
                "seqLens": [64],
                "ac": ["none"],
                "attn": ["sdpa"],
                "include": [{"model": "tiny-qwen3", "type": "generate", "attn": "flex"}],
            },
            "generate": {"batchSizes": [1, 4], "newTokens": 8},
            "verify": {"samples": 2, "newTokens": 16, "raftCycles": 1, "runTimeoutSeconds": 1},
            "steps": 1,
            "warmupSteps": 1,
            "timeoutSeconds": 120,
        },
    }
    path = tmp_path / "types.yaml"
    path.write_text(yaml.safe_dump(manifest))
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "trainbench.cli", "run", str(path), "--local", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = json.loads((out / "results.json").read_text())
    by = {(c["type"], c["attn"]): c for c in results["cases"]}
    gen, ver, flex = by["generate", "sdpa"], by["verify", "sdpa"], by["generate", "flex"]
    assert p.returncode == 1, p.stderr[-2000:]  # the flex case failed, the others ran
    assert gen["phase"] == "Succeeded" and ver["phase"] == "Succeeded", p.stderr[-3000:]
    assert flex["phase"] == "Failed" and flex["reason"] == "BadConfig" and "flex" in flex["message"]
    g = gen["trainer"]["generate"]
    assert [b["batch_size"] for b in g["batches"]] == [1, 4] and g["no_cache"]["tokens_match"] is True
    assert gen["metrics"]["tps"]["mean"] > 0 and gen["metrics"]["mfu"]["mean"] > 0
    v = ver["trainer"]["verify"]
    assert [cy["cycle"] for cy in v["cycles"]] == [0, 1] and v["cycles"][0]["score"]["samples"] == 32
    samples = [json.loads(line) for line in Path(v["files"]["samples"]).read_text().splitlines()]
    assert len(samples) == 64 and {s["cycle"] for s in samples} == {0, 1}
    assert all(s["status"] in ("no_code", "compile_error", "passed", "wrong_output", "crash") for s in samples)
    with open(v["files"]["hardware"]) as f:
        hw = list(csv.DictReader(f))
    assert hw and int(hw[0]["process_rss_bytes"]) > 0
    report = (out / "report.md").read_text()
    assert "## Generation" in report and "## Code Verification" in report and "KV cache" in report
    assert "| trainbench/tiny-qwen3 | 1xCPU | 16 × 2 | RAFT 1 |" in report
    assert "## Failed Benchmarks" in report and "BadConfig" in report
    # the operator's /metrics export the types' results
    from prometheus_client import generate_latest

    from trainbench.operator.controller.metrics import OperatorMetrics
    from trainbench.trainer import contract as C

    store = OperatorMetrics()
    store.update("ns", "types", "types", {"phase": "PartiallyFailed"}, results)
    text = generate_latest(store).decode()
    assert f"{C.OM_RESULT_GEN_DECODE_TPS}{{" in text and 'batch_size="4"' in text
    assert f"{C.OM_RESULT_VER_PASS_AT_K}{{" in text and 'k="2"' in text
    assert f"{C.OM_RESULT_VER_COMPILE_RATE}{{" in text


def test_report_sections_mark_the_headline_verdicts():
    from datetime import datetime, timezone

    from trainbench.operator.report.markdown import render_report
    from trainbench.operator.results.document import build_results

    spec = {
        "pools": [{"name": "cpu", "hardware": "CPU"}],
        "matrix": {"models": ["tiny-qwen3"], "types": ["generate"], "seqLens": [512]},
    }
    (case,) = plan(spec)
    s = {"mean": 100.0, "std": 1.0, "min": 99.0, "max": 101.0, "n": 2}
    rows = [
        {"batch_size": 1, "error": None, "decode_tps": s, "prefill_mfu": s, "ttft_s": s, "distinct_first_tokens": 1},
        {"batch_size": 8, "error": "OutOfMemory: CUDA out of memory"},
    ]
    result = {
        "config": {"type": "generate"},
        "metrics": {"tps": s, "mfu": s},
        "generate": {"prompt_len": 8192, "new_tokens": 128, "headline_batch_size": 1, "batches": rows},
    }
    now = datetime.now(timezone.utc)
    doc = build_results("r", "s", spec, [case], {case.id: {"phase": "Succeeded", "result": result}}, now, now, {})
    doc["cases"][0]["verdicts"] = {"tps": {"metric": "tps", "status": "regression", "change_pct": -20.0}}
    text = render_report(doc)
    assert "| 1 | – | 1e+05 ms | **100.0** :warning: (-20.0%) | 100.0% |" in text
    assert "| 8 | **OutOfMemory: CUDA out of memory** |" in text
    assert "## Code Verification" not in text and "## tiny-qwen3" not in text.split("## Generation")[0]


def test_operator_job_of_a_generate_case_asks_for_one_gpu_and_parses():
    from trainbench.operator import kube

    spec = {
        "pools": [{"name": "h100", "gpusPerNode": 8, "nodes": 2}],
        "matrix": {"models": ["qwen3-0.6b"], "types": ["sft-full", "generate", "verify"], "seqLens": [4096]},
    }
    train, gen, ver = plan(spec)
    run = {"metadata": {"name": "r", "namespace": "bench", "uid": "u"}}
    for case, gpus in ((train, "8"), (gen, "1"), (ver, "1")):
        job = kube.build_job(run, case, namespace="bench")
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
        cmd = container.get("command", []) + container.get("args", [])
        at = cmd.index("trainbench.trainer")
        parsed = parse_args(cmd[at + 1 :])
        assert parsed.type == case.type
        assert f"--nproc-per-node={gpus}" in cmd and ("--standalone" in cmd) == (case.type != "sft-full")
