"""Hostile input (issue 19), the local path and the pure parts of the cluster path.

Every bad-input case of the operator suite (controller/test_bad_input.py: refused at admission by the CRD, or by
the operator's planner; tests/crd checks the same cases against a real API server and the emulator) is refused by
`trainbench plan FILE` and `trainbench run FILE --local` too: exit code 2, one line on stderr that names the same
field, nothing run or written. Then the families only a file can carry (YAML that crashes or hangs a loader,
several documents, bad metadata, numbers JSON has not), derived names of hostile run names, the report's escaping
of every user string, a pinned baseline that is missing or garbage, and a ConfigMap this run does not own.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ophelpers import wait_for

from trainbench.cli import main as cli
from trainbench.operator import kube as K
from trainbench.operator.api import DNS1123_SUBDOMAIN, SpecError, parse_spec
from trainbench.operator.clock import now
from trainbench.operator.controller import reconcile
from trainbench.operator.manifest import MAX_ALIASES, ManifestError, load_documents
from trainbench.operator.plan import MAX_EXPANDED, Case, matrix_size, plan
from trainbench.operator.report.markdown import render_report, text
from trainbench.operator.results import baseline as B

HERE = Path(__file__).resolve().parent


def _bad_input():
    spec = importlib.util.spec_from_file_location("bad_input_cases", HERE / "controller" / "test_bad_input.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BAD = _bad_input()
SUITE_CASES = [(n, s, f) for n, s, f in BAD.REFUSED_BY_SCHEMA + BAD.REFUSED_BY_OPERATOR if isinstance(s, dict)]
HEADER = "apiVersion: trainbench.dev/v1alpha1\nkind: BenchmarkRun\n"
GOOD_SPEC = "spec:\n  pools: [{name: cpu}]\n  matrix: {models: [tiny-qwen3], seqLens: [128]}\n"


def write(tmp_path: Path, text_: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text_)
    return path


def refused_locally(tmp_path: Path, path: Path, capsys) -> str:
    """`trainbench plan` and `trainbench run --local` both refuse `path`: exit 2, one stderr line, nothing
    written; the line."""
    assert cli(["plan", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainbench: error: "), captured.err
    assert captured.out == ""
    out = tmp_path / "out"
    assert cli(["run", str(path), "--local", "--out", str(out), "--no-progress"]) == 2
    again = capsys.readouterr()
    assert again.err.strip() == lines[0]
    assert not out.exists()  # nothing half-started
    return lines[0]


# --- every case of the cluster suite, refused locally on the same field -------------------------------------------


@pytest.mark.parametrize(("name", "spec", "field"), SUITE_CASES, ids=[c[0] for c in SUITE_CASES])
def test_the_local_path_refuses_what_the_cluster_refuses(tmp_path, capsys, name, spec, field):
    doc = {"apiVersion": "trainbench.dev/v1alpha1", "kind": "BenchmarkRun", "metadata": {"name": name}, "spec": spec}
    line = refused_locally(tmp_path, write(tmp_path, yaml.safe_dump(doc)), capsys)
    assert field in line.split(": ", 2)[2], line  # after "trainbench: error: FILE: "


def test_unknown_fields_are_refused_locally(tmp_path, capsys):
    """Pruned by a server without Strict, refused by kubectl's default and by the local path."""
    for extra, field in (
        ("  stepz: 3\n", "spec.stepz"),
        ("  tolerationz: []\n", "spec.tolerationz"),
    ):
        line = refused_locally(tmp_path, write(tmp_path, HEADER + "metadata: {name: t}\n" + GOOD_SPEC + extra), capsys)
        assert field in line and "unknown field" in line, line
    toleration = GOOD_SPEC.replace("{name: cpu}", "{name: cpu, tolerations: [{key: k, operator: Exists, sec: 1}]}")
    line = refused_locally(tmp_path, write(tmp_path, HEADER + "metadata: {name: t}\n" + toleration), capsys)
    assert "spec.pools[0].tolerations[0].sec: unknown field" in line, line


# --- what only a file can carry ------------------------------------------------------------------------------------


def _bomb(levels: int = 12) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines)


FILE_CASES = [
    # (name, file text, words the one line must hold)
    (
        "duplicate-key",
        HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "  steps: 2\n  steps: 3\n",
        "duplicate key 'steps'",
    ),
    ("recursive-anchor", HEADER + "metadata: {name: t}\nspec: &s {pools: [*s]}\n", "recursive anchor"),
    (
        "anchor-bomb",
        HEADER
        + "metadata: {name: t}\n"
        + GOOD_SPEC
        + "x:\n"
        + "\n".join("  " + line for line in _bomb(12).splitlines())
        + "\n",
        "anchor bomb",
    ),  # fmt: skip
    (
        "anchor-bomb-within-limit",  # 11 x 9 = 99 aliases, but 9^11 nodes once expanded
        HEADER + "metadata: {name: t}\nspec:\n  pools: [{name: cpu}]\n  matrix:\n    models: [tiny-qwen3]\n"
        "    x:\n" + "\n".join("      " + line for line in _bomb(11).splitlines()) + "\n    seqLens: *a10\n",
        "expands to more than",
    ),
    (
        "two-documents",
        HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "---\n" + HEADER + "metadata: {name: u}\n" + GOOD_SPEC,
        "holds 2 YAML documents",
    ),  # fmt: skip
    ("metadata-list", HEADER + "metadata: [name, t]\n" + GOOD_SPEC, "metadata: must be a mapping"),
    ("numeric-name", HEADER + "metadata: {name: 123}\n" + GOOD_SPEC, "metadata.name: must be a string"),
    ("uppercase-name", HEADER + "metadata: {name: Nightly}\n" + GOOD_SPEC, "metadata.name: 'Nightly' is not a valid"),
    ("long-name", HEADER + "metadata: {name: " + "a" * 254 + "}\n" + GOOD_SPEC, "metadata.name"),
    ("no-name", HEADER + "metadata: {}\n" + GOOD_SPEC, "metadata.name (or metadata.generateName) is required"),
    (
        "infinite-price",
        HEADER + "metadata: {name: t}\n" + GOOD_SPEC.replace("{name: cpu}", "{name: cpu, pricePerGPUHour: .inf}"),
        "spec.pools[0].pricePerGPUHour: Input should be a finite number",
    ),  # fmt: skip
    (
        "nan-threshold",
        HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "  thresholds: {default: .nan}\n",
        "spec.thresholds.default",
    ),  # fmt: skip
    ("string-steps", HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "  steps: '5'\n", "spec.steps"),
    ("yes-suspend", HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "  suspend: 'yes'\n", "spec.suspend"),
    ("date-steps", HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "  steps: 2026-01-01\n", "spec.steps"),
    (
        "nul-model",
        HEADER + "metadata: {name: t}\n" + GOOD_SPEC.replace("tiny-qwen3", '"a\\0.json"'),
        "spec.matrix.models[0]",
    ),  # fmt: skip
    (
        "int64-overflow",
        HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "  warmupSteps: 99999999999999999999\n",
        "spec",
    ),  # fmt: skip
    ("not-a-mapping", "- 1\n- 2\n", "no BenchmarkRun in the file"),
    ("root-typo", HEADER + "metadata: {name: t}\n" + GOOD_SPEC + "specs: {}\n", "specs: unknown field"),
]


@pytest.mark.parametrize(("name", "text_", "words"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_files_that_crash_or_hang_a_loader_are_refused(tmp_path, capsys, name, text_, words):
    line = refused_locally(tmp_path, write(tmp_path, text_), capsys)
    assert words in line, line
    assert len(line) < 600


def test_a_model_config_path_is_read_locally_and_checked(tmp_path, capsys):
    garbage = write(tmp_path, "[1, 2]", "list.json")
    broken = write(tmp_path, "{not json", "broken.json")
    for path in (garbage, broken, tmp_path / "missing.json"):
        spec = GOOD_SPEC.replace("tiny-qwen3", str(path))
        line = refused_locally(tmp_path, write(tmp_path, HEADER + "metadata: {name: t}\n" + spec), capsys)
        assert "spec.matrix.models[0]" in line, line
    # a good config path plans locally, and is refused for the operator (which never opens a file a spec names)
    shipped = Path(sys.modules["trainbench.trainer"].__file__).parent / "configs" / "tiny-qwen3.json"
    local = write(tmp_path, shipped.read_text(), "mine.json")
    spec = parse_spec({"pools": [{"name": "cpu"}], "matrix": {"models": [str(local)], "seqLens": [128]}})
    assert len(plan(spec, model_paths=True)) == 1
    with pytest.raises(SpecError, match="local executor only") as e:
        plan(spec)
    assert e.value.field == "spec.matrix.models[0]"
    # `trainbench run FILE` without --local submits to the cluster: refused before any cluster is asked
    path = write(tmp_path, HEADER + "metadata: {name: t}\n" + GOOD_SPEC.replace("tiny-qwen3", str(local)))
    assert cli(["plan", str(path)]) == 0
    capsys.readouterr()
    assert cli(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "spec.matrix.models[0]" in err and "local executor only" in err, err


def test_the_loader_bounds(tmp_path):
    assert load_documents("a: &x 1\nb: *x\n") == [{"a": 1, "b": 1}]  # aliases are fine within the bounds
    assert load_documents("d: 2026-01-01\n") == [{"d": "2026-01-01"}]  # dates stay strings (JSON has none)
    many = "a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(ManifestError, match="aliases"):
        load_documents(many)
    with pytest.raises(ManifestError, match="nested deeper"):
        load_documents("a: " + "[" * 200 + "]" * 200 + "\n")


def test_a_huge_matrix_is_counted_not_expanded():
    """13M cases: the count is a product of list lengths (O(1)); plan refuses before expanding anything."""
    spec = parse_spec(
        {
            "pools": [{"name": f"p{i}", "gpusPerNode": 16} for i in range(16)],
            "matrix": {
                "models": ["tiny-qwen3"],
                "types": ["sft-full", "rl-full", "rl-lora", "generate", "verify"],
                "seqLens": list(range(1024, 1024 + 32)),
                "ac": ["none", "recompute"],
                "ep": list(range(1, 17)),
                "cp": list(range(1, 17)),
            },
        }
    )
    assert matrix_size(spec) == 5 * 32 * 2 * 16 * 16 * 16 > 1_000_000
    with pytest.raises(SpecError, match=f"at most {MAX_EXPANDED}") as e:
        plan(spec)
    assert e.value.field == "spec.matrix"


def test_a_subprocess_refuses_in_one_line(tmp_path):
    """The real CLI process (not the in-process entry): a hostile file is one line and exit 2."""
    path = write(tmp_path, HEADER + "metadata: {name: t}\nspec: &s {pools: [*s]}\n")
    p = subprocess.run(
        [sys.executable, "-m", "trainbench.cli", "run", str(path), "--local", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "recursive anchor" in p.stderr and not (tmp_path / "o").exists()


# --- names derived from hostile run names --------------------------------------------------------------------------

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize("run", ["1st-nightly", "a" * 253, "9" * 253, "x." * 126 + "y", "nightly"])
def test_child_names_are_valid_for_any_run_name(run):
    assert re.match(DNS1123_SUBDOMAIN, run) and len(run) <= 253
    case = Case(
        id="tiny-qwen3-sft-full-128-recompute-auto-cpu-d1f695", model="tiny-qwen3", hf_name="x", type="sft-full",
        seq_len=128, ac="recompute", attn="auto", ep=1, cp=1, pool="cpu", nodes=2, gpus_per_node=1, image="t:1",
        steps=1, warmup_steps=0, micro_batch=1, batch_size=1, compile=False, timeout_seconds=60,
    )  # fmt: skip
    body = {"metadata": {"name": run, "uid": "u1", "namespace": "default"}}
    job, service = K.job_name(run, case.id), K.build_service(body, case, namespace="default")
    assert DNS1035.match(job) and len(job) <= 63, job  # a Job's name, its pods' hostnames and its Service's
    assert service["metadata"]["name"] == job
    jobset = K.jobset_name(run, case.id)
    assert DNS1035.match(jobset) and len(jobset) <= K.JOBSET_NAME_MAX
    for cm in (K.results_configmap_name(run), K.report_configmap_name(run)):
        assert re.match(DNS1123_SUBDOMAIN, cm) and len(cm) <= 253, cm
    assert K.results_configmap_name(run) != K.report_configmap_name(run)
    for value in K.case_labels(body, case, suite=run).values():
        assert LABEL_VALUE.match(value) and len(value) <= 63, value
    if run == "nightly":  # ordinary names keep their plain forms
        assert K.results_configmap_name(run) == "nightly-results" and job.startswith("nightly-")
    # names of two long runs that share a head never collide
    other = run[:-1] + ("b" if run[-1] != "b" else "c")
    assert K.results_configmap_name(other) != K.results_configmap_name(run)
    assert K.job_name(other, case.id) != job


# --- every user string is bounded and escaped in the report --------------------------------------------------------

EVIL = "## H100 | <img src=x onerror=alert(1)> [x](http://e.vil) `code`"


def test_the_report_escapes_every_user_string(current):
    doc = json.loads(json.dumps(current))
    doc["suite"] = "nightly <script>"
    for c in doc["cases"]:
        c["hardware"] = EVIL
        c["model"] = c["model"] + " | <b>"
    failed = next(c for c in doc["cases"] if c["phase"] != "Succeeded")
    failed["reason"] = "Error|<i>"
    failed["message"] = "```\n</details><img src=x onerror=alert(2)>\n" + "x" * 20000
    report = render_report(doc)
    assert "<img" not in report and "<script>" not in report and "<b>" not in report and "<i>" not in report
    assert not re.search(r"(?<!\\)\]\(http", report)  # no link
    assert "\n## H100" not in report  # no forged heading
    for block in re.split(r"\n\n", report):
        rows = [line for line in block.splitlines() if line.startswith("| ")]
        if rows:  # every row of a table has the columns of its header (an escaped | does not split a cell)
            widths = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
            assert len(widths) == 1, block
    assert len(report) < 40000  # the 20 kB log is cut
    assert text("x" * 1000).endswith("…") and len(text("x" * 1000)) == 200


# --- a pinned baseline that is missing or garbage is said --------------------------------------------------------


def test_a_missing_or_garbage_baseline_configmap_is_said(current):
    for cm, words in (
        (None, "not found"),
        ({"data": {}}, "has no results.json"),
        ({"data": {"results.json": "{garbage"}}, "is not JSON"),
        ({"data": {"results.json": "[1, 2]"}}, "not a baseline"),
    ):
        with pytest.raises(B.BaselineError, match=words):
            B.from_configmap(cm, "pinned", "default")
    from trainbench.operator.report.finalize import finalize

    doc = json.loads(json.dumps(current))
    done = finalize(doc, baseline=B.unavailable("baseline configmap/pinned in namespace default: not found"))
    assert "**Baseline:** :warning: unavailable, no comparison: baseline configmap/pinned" in done.report
    status = reconcile.finished_status({}, {}, "r", 1, done.results, now())
    cond = {c["type"]: c for c in status["conditions"]}["BaselineUnavailable"]
    assert cond["status"] == "True" and "configmap/pinned" in cond["message"]


# --- the cluster: a ConfigMap this run does not own is never overwritten; a missing baseline or queue is said ----


def test_the_operator_never_overwrites_a_configmap_it_does_not_own(cluster, kubectl, operator):
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "mine-report"},
        "data": {"report.md": "a user's own ConfigMap"},
    }
    kubectl.apply(json.dumps(foreign))
    operator.start()
    kubectl.apply(BAD.manifest("mine", BAD.GOOD_SPEC))
    spec = {**BAD.GOOD_SPEC, "baseline": {"source": "configMap", "configMap": "no-such-baseline"}}
    kubectl.apply(BAD.manifest("pinned", spec))
    kubectl.apply(BAD.manifest("queued", {**BAD.GOOD_SPEC, "queueName": "no-such-queue"}))
    long_name = "1" + "a" * 251 + "z"  # 253 characters, starting with a digit: every child name is derived safely
    kubectl.apply(BAD.manifest(long_name, BAD.GOOD_SPEC))

    def queue_condition():
        conds = (kubectl.get_json("br", "queued").get("status") or {}).get("conditions") or []
        return next((c for c in conds if c["type"] == "QueueAvailable"), None)

    # the emulated cluster serves no Kueue API: the run says why its Jobs will wait instead of waiting silently
    cond = wait_for(queue_condition, 120, "the QueueAvailable condition", on_fail=operator.log)
    assert cond["status"] == "False" and cond["reason"] == "QueueNotFound", cond
    assert "Kueue is not installed" in cond["message"] and "no-such-queue" in cond["message"]
    status = wait_for(
        lambda: (s := kubectl.get_json("br", "pinned").get("status") or {}).get("resultsConfigMap") and s,
        240,
        "the run with a missing baseline to finish",
        on_fail=operator.log,
    )
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["BaselineUnavailable"]["status"] == "True", cond
    assert (
        "configmap/no-such-baseline" in cond["BaselineUnavailable"]["message"]
        and "not found" in cond["BaselineUnavailable"]["message"]
    )
    report = kubectl.get_json("configmap", status["reportConfigMap"])["data"]["report.md"]
    assert ":warning: unavailable, no comparison: baseline configmap/no-such-baseline" in report
    done = wait_for(
        lambda: (s := kubectl.get_json("br", long_name).get("status") or {}).get("resultsConfigMap") and s,
        240,
        "the run with a 253-character name to finish",
        on_fail=operator.log,
    )
    assert done["phase"] == "Succeeded" and done["resultsConfigMap"] == K.results_configmap_name(long_name)
    assert len(done["resultsConfigMap"]) <= 253 and kubectl.get_json("configmap", done["reportConfigMap"])["data"]
    (job,) = kubectl.get_json("jobs", "-l", K.run_selector(long_name))["items"]
    assert job["metadata"]["name"].startswith("r1aaa") and len(job["metadata"]["name"]) <= 63
    # a ConfigMap of the name the run writes that it does not own: never overwritten, said, the run still finishes
    mine = wait_for(
        lambda: (r := kubectl.get_json("br", "mine")).get("status", {}).get("resultsConfigMap") and r, 240, "mine"
    )
    assert kubectl.get_json("configmap", "mine-report")["data"] == {"report.md": "a user's own ConfigMap"}
    own = reconcile.own_configmap_name("mine-report", mine["metadata"]["uid"])
    assert mine["status"]["reportConfigMap"] == own and mine["status"]["resultsConfigMap"] == "mine-results"
    assert "report.md" in kubectl.get_json("configmap", own)["data"]
    cond = {c["type"]: c for c in mine["status"]["conditions"]}["ConfigMapNotOwned"]
    assert "configmap/mine-report exists and belongs to no BenchmarkRun: not overwritten" in cond["message"]
