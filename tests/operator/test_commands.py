"""`trainbench plan | report | compare | run` argument handling; bad manifests get the operator's messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from trainbench.cli import main as cli
from trainbench.operator.api import SpecError
from trainbench.operator.plan import plan

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "cpu-smoke.yaml"
PRIME = Path(__file__).parent / "data" / "prime-rl"


def manifest(tmp_path: Path, spec: dict, **meta) -> Path:
    doc = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": "t", **meta}}
    doc["spec"] = spec
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def smoke_spec() -> dict:
    return copy.deepcopy(yaml.safe_load(SMOKE.read_text())["spec"])


def test_plan_prints_the_smoke_suite(capsys):
    assert cli(["plan", str(SMOKE)]) == 0
    out = capsys.readouterr().out
    assert "5 case(s) in BenchmarkRun cpu-smoke" in out
    assert "tiny-qwen3-rl-lora-256-none-sdpa-cpu-" in out
    assert cli(["plan", str(SMOKE), "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)
    assert [c["id"] for c in cases] == [c.id for c in plan(smoke_spec())]


def _bad(spec_edit):
    spec = smoke_spec()
    spec_edit(spec)
    return spec


BAD_SPECS = [
    _bad(lambda s: s["matrix"].update(models=["gpt-17"])),
    _bad(lambda s: s["matrix"].update(types=["sft-lora"])),
    _bad(lambda s: s["matrix"].update(seqLens=[0])),
    _bad(lambda s: s["matrix"].update(ep=[2])),  # dense models
    _bad(lambda s: s["pools"][0].update(gpusPerNode=0)),
    _bad(lambda s: s.update(steps=0)),
    _bad(lambda s: s.update(stepz=5)),
    _bad(lambda s: s.update(batchSize=3, microBatch=2)),
    _bad(lambda s: s["matrix"].update(pools=["h100"])),
    _bad(
        lambda s: s["matrix"].update(
            exclude=[{"model": "tiny-qwen3"}, {"model": "tiny-llama"}, {"model": "tiny-qwen3-moe"}]
        )
    ),
]


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_manifests_get_the_same_errors_as_in_the_cluster(tmp_path, capsys, spec):
    with pytest.raises(SpecError) as e:
        plan(spec)  # what the operator says (it validates with the same parse_spec + plan)
    path = manifest(tmp_path, spec)
    for cmd in (["plan", str(path)], ["run", str(path), "--local", "--out", str(tmp_path / "out")]):
        assert cli(cmd) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"trainbench: error: {path}: {e.value}"
    assert not (tmp_path / "out").exists()  # nothing half-started


def test_bad_files(tmp_path, capsys):
    p = tmp_path / "a.yaml"
    p.write_text("kind: ConfigMap\napiVersion: v1\n")
    assert cli(["plan", str(p)]) == 2
    assert "no BenchmarkRun in the file (found kinds: ConfigMap)" in capsys.readouterr().err
    p.write_text("a: [1,\n")
    assert cli(["plan", str(p)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    p.write_text("apiVersion: trainbench.dev/v1\nkind: BenchmarkRun\nmetadata: {name: x}\nspec: {}\n")
    assert cli(["plan", str(p)]) == 2
    assert "apiVersion must be trainbench.dev/v1alpha1" in capsys.readouterr().err
    assert cli(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert cli(["report", str(tmp_path)]) == 2
    assert "results.json: no such file" in capsys.readouterr().err


def test_report_from_a_folder_and_files(tmp_path, capsys, current, baseline_results):
    (tmp_path / "now").mkdir()
    (tmp_path / "now" / "results.json").write_text(json.dumps(current))
    (tmp_path / "before.json").write_text(json.dumps(baseline_results))
    assert cli(["report", str(tmp_path / "now")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Performance Benchmarks: nightly") and "no baseline" in out
    assert cli(["report", str(tmp_path / "now"), "--baseline", str(tmp_path / "before.json")]) == 0
    out = capsys.readouterr().out
    assert "**26.01k** :warning: (-8.0%)" in out and "2 regressions" in out
    code = cli(["report", str(tmp_path / "now"), "--baseline", str(tmp_path / "before.json"), "--fail-on-regression"])
    capsys.readouterr()
    assert code == 1
    assert cli(["report", str(tmp_path / "now"), "--baseline", str(tmp_path / "before.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "trainbench.dev/results/v1" and doc["summary"]["regressions"] == 2
    assert cli(["report", str(tmp_path / "now"), "--baseline", str(PRIME), "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "report.md").read_text()
    assert "3 prime-rl benchmark file(s)" in text and "(0 of 5 cases matched)" in text  # FA3 there, FA2 here


def test_compare_two_runs(tmp_path, capsys, current, baseline_results):
    (tmp_path / "a.json").write_text(json.dumps(baseline_results))
    (tmp_path / "b.json").write_text(json.dumps(current))
    assert cli(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Compare: `nightly-20260206` → `nightly-20260207`")
    assert "| Qwen3-0.6B | SFT Full 8192 1xH100 HBM3 | **16.8%** :warning: (-8.0%)" in out
    assert cli(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"] == "nightly-20260206" and data["summary"]["regressions"] == 2
    statuses = [v["status"] for c in data["cases"] for v in (c["verdicts"] or {}).values()]
    assert "regression" in statuses and "improvement" in statuses
    assert cli(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail-on-regression"]) == 1


def test_the_report_side_never_imports_torch():
    import subprocess
    import sys

    mods = "commands, local, collect, report.finalize, report.markdown, report.plots, results.document, "
    mods += "results.baseline, results.history, results.verdict, results.keys, controller.handlers"
    imports = "; ".join(f"import trainbench.operator.{m}" for m in mods.split(", "))
    code = f"import sys; {imports}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_plans(path, capsys):
    assert cli(["plan", str(path)]) == 0, capsys.readouterr().err
