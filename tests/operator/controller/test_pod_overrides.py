"""Issues 15/16 in the pure parts: trainer pod overrides (spec.podTemplate per run and per pool, the operator's
trainerPods defaults), real weights mounted read-only, cancel, and what ran (image digest, repro command)."""

from __future__ import annotations

import copy
import json
import math
import os
import shlex
from datetime import datetime, timezone
from pathlib import Path

import kubernetes_validate
import pytest

from trainbench.operator import api
from trainbench.operator import kube as K
from trainbench.operator.controller import reconcile
from trainbench.operator.controller.runner import pod_defaults
from trainbench.operator.plan import plan
from trainbench.operator.report.markdown import render_report
from trainbench.operator.results import document as R

NOW = datetime(2026, 2, 7, 3, 0, tzinfo=timezone.utc)
RUN = {
    "apiVersion": api.API_VERSION,
    "kind": api.KIND,
    "metadata": {"name": "nightly-20260207", "namespace": "bench", "uid": "u-1", "generation": 1},
}
DIGEST = "sha256:" + "ab" * 32


def spec(**extra) -> api.BenchmarkRunSpec:
    body = {
        "pools": [
            {
                "name": "private",
                "image": "registry.example/trainer:1.0",
                "podTemplate": {
                    "imagePullSecrets": [{"name": "pool-registry"}],
                    "priorityClassName": "bench-high",
                    "env": [{"name": "NCCL_IB_HCA", "value": "mlx5_1"}],
                    "resources": {"limits": {"rdma/rdma_shared_device_a": 1}},
                    "labels": {"team": "pool"},
                },
            },
            {"name": "plain"},
        ],
        "matrix": {"models": ["tiny-qwen3"], "seqLens": [128]},
    }
    body.update(extra)
    return api.parse_spec(body)


def launched(s: api.BenchmarkRunSpec, defaults: dict | None = None) -> dict[str, dict]:
    """pool -> the Job the reconciler creates for its case."""
    out = reconcile.reconcile(
        copy.deepcopy(RUN), s, plan(s), reconcile.Observed(), now=NOW, namespace="bench", pod_defaults=defaults
    )
    return {o["metadata"]["labels"][K.L_POOL]: o for o in out.create if o["kind"] == "Job"}


def pod(job: dict) -> tuple[dict, dict]:
    p = job["spec"]["template"]["spec"]
    return p, p["containers"][0]


def test_private_registry_pool_jobs_carry_image_pull_secrets_and_the_merged_template():
    run_template = {
        "imagePullSecrets": [{"name": "run-registry"}],
        "runtimeClassName": "nvidia",
        "serviceAccountName": "bench",
        "env": [{"name": "NCCL_IB_HCA", "value": "mlx5_0"}, {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"}],
        "annotations": {"run": "yes"},
        "labels": {"team": "run", K.L_RUN: "spoofed"},
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "volumes": [{"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets"}}],
        "volumeMounts": [{"name": "datasets", "mountPath": "/data", "readOnly": True}],
    }
    defaults = pod_defaults(json.dumps({"priorityClassName": "low", "imagePullSecrets": [{"name": "chart"}]}))
    jobs = launched(spec(podTemplate=run_template), defaults)
    for job in jobs.values():
        kubernetes_validate.validate(job, "1.30.0", strict=True)

    p, c = pod(jobs["private"])
    assert p["imagePullSecrets"] == [{"name": "chart"}, {"name": "run-registry"}, {"name": "pool-registry"}]
    assert p["priorityClassName"] == "bench-high"  # pool over run over the operator's defaults
    assert p["runtimeClassName"] == "nvidia" and p["serviceAccountName"] == "bench"
    assert "nodeAffinity" in p["affinity"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NCCL_IB_HCA"] == "mlx5_1" and env["NCCL_SOCKET_IFNAME"] == "eth0"
    assert env["TRAINBENCH_CASE"] == plan(spec())[0].id  # the operator's own variables stay
    assert c["resources"]["limits"]["rdma/rdma_shared_device_a"] == "1"
    assert c["resources"]["requests"]["rdma/rdma_shared_device_a"] == "1"  # an extended resource: request = limit
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    labels = jobs["private"]["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "pool" and labels[K.L_RUN] == "nightly-20260207"  # the operator's labels win
    assert jobs["private"]["spec"]["template"]["metadata"]["annotations"]["run"] == "yes"
    assert {"name": "datasets", "mountPath": "/data", "readOnly": True} in c["volumeMounts"]
    assert {"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets"}} in p["volumes"]

    p, c = pod(jobs["plain"])  # the run's template and the defaults only
    assert p["imagePullSecrets"] == [{"name": "chart"}, {"name": "run-registry"}]
    assert p["priorityClassName"] == "low"
    assert "rdma/rdma_shared_device_a" not in c["resources"]["limits"]


def test_without_templates_the_pod_is_unchanged():
    p, c = pod(launched(spec(pools=[{"name": "plain"}]))["plain"])
    assert not {"imagePullSecrets", "priorityClassName", "affinity", "serviceAccountName"} & set(p)


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"imagePullSecrets": ["regcred"]}, "spec.podTemplate.imagePullSecrets[0]"),
        ({"env": [{"name": "A B", "value": "x"}]}, "spec.podTemplate.env[0].name"),
        ({"resources": {"limits": {"bad name!": "1"}}}, "spec.podTemplate.resources.limits"),
        ({"volumeMounts": [{"name": "v", "mountPath": "relative"}]}, "spec.podTemplate.volumeMounts[0].mountPath"),
        ({"priorityClass": "x"}, "spec.podTemplate.priorityClass"),
    ],
)
def test_bad_pod_templates_are_refused_naming_the_field(template, field):
    with pytest.raises(api.SpecError) as e:
        spec(podTemplate=template)
    assert e.value.field == field


def test_operator_defaults_are_checked():
    with pytest.raises(ValueError, match="imagePullSecrets.0"):
        pod_defaults(json.dumps({"imagePullSecrets": ["regcred"]}))
    with pytest.raises(ValueError, match="not JSON"):
        pod_defaults("{")


# --- weights ---------------------------------------------------------------------------------------------------


def test_weights_are_mounted_read_only_and_passed():
    s = spec(weights={"Qwen/Qwen3-tiny-test": {"persistentVolumeClaim": {"claimName": "models"}, "path": "x"}})
    assert all("--weights" not in pod(j)[1]["command"] for j in launched(s).values())  # another model
    s = spec(weights={"tiny-qwen3": {"persistentVolumeClaim": {"claimName": "models"}, "path": "qwen3/tiny/"}})
    for job in launched(s).values():
        kubernetes_validate.validate(job, "1.30.0", strict=True)
        p, c = pod(job)
        assert c["command"][-2:] == ["--weights", "/weights/qwen3/tiny"]
        assert {"name": "weights", "mountPath": "/weights", "readOnly": True} in c["volumeMounts"]
        assert {"name": "weights", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in p["volumes"]


def test_local_executor_loads_the_weights_directory(tmp_path):
    """spec.weights with a local path: the trainer loads the tiny safetensors the test wrote (all zeros: every
    logit is 0, so the first loss is exactly log(vocab))."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from trainbench.operator.local import LocalOptions, case_command, run_local
    from trainbench.trainer.models.hf import build_model
    from trainbench.trainer.specs import resolve_model

    model_spec = resolve_model("tiny-qwen3")
    model = build_model(model_spec, torch.device("cpu"), torch.float32)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    weights = tmp_path / "weights"
    weights.mkdir()
    save_file(state, str(weights / "model.safetensors"))
    s = api.parse_spec(
        {
            "pools": [{"name": "cpu"}],
            "matrix": {"models": ["tiny-qwen3"], "seqLens": [64]},
            "steps": 1,
            "warmupSteps": 0,
            "weights": {"tiny-qwen3": {"path": str(weights)}},
        }
    )
    opts = LocalOptions(out=tmp_path / "out", device="cpu", progress=False, log=open(os.devnull, "w"))  # noqa: SIM115
    cmd = case_command(
        plan(s)[0], "r", "cpu", LocalOptions(out=tmp_path, weights={"tiny-qwen3": str(weights)}), tmp_path
    )
    assert cmd[cmd.index("--weights") + 1] == str(weights)
    done = run_local("weights", s, opts)
    case = done.results["cases"][0]
    assert case["phase"] == "Succeeded", case["message"]
    full = json.loads((tmp_path / "out" / "cases" / f"{case['id']}.json").read_text())
    assert full["config"]["weights"] == str(weights)
    assert full["losses"][0] == pytest.approx(math.log(model_spec.vocab), rel=1e-6)
    assert "--weights" in shlex.split(case["repro"])  # the repro line runs the same weights
    with pytest.raises(ValueError, match="no such file"):
        run_local("weights", s, LocalOptions(out=tmp_path / "o2", weights={"tiny-qwen3": str(tmp_path / "nope")}))


# --- cancel ----------------------------------------------------------------------------------------------------


def test_cancel_stops_running_cases_and_ends_the_run():
    s = spec(pools=[{"name": "a", "maxConcurrent": 1}], matrix={"models": ["tiny-qwen3"], "seqLens": [64, 128]})
    cases = plan(s)
    run = copy.deepcopy(RUN)
    out = reconcile.reconcile(run, s, cases, reconcile.Observed(), now=NOW, namespace="bench")
    job = next(o for o in out.create if o["kind"] == "Job")
    name = job["metadata"]["name"]
    run["status"] = out.status
    running = {
        **job,
        "status": {"active": 1},
        "metadata": {**job["metadata"], "creationTimestamp": "2026-02-07T03:00:00Z"},
    }
    observed = reconcile.Observed(jobs={name: running})

    cancelled = s.model_copy(update={"cancel": True})
    out = reconcile.reconcile(run, cancelled, cases, observed, now=NOW, namespace="bench")
    assert [c["phase"] for c in out.status["cases"]] == ["Cancelled", "Cancelled"]
    assert out.status["phase"] == "Cancelled" and out.write_results and not out.create
    assert out.delete_jobs == [name]  # the running case's Job (the handler deletes it after the status write)
    run["status"] = {**out.status, "cases": [{**c, "phase": "Running"} for c in out.status["cases"]]}
    out = reconcile.reconcile(run, cancelled, cases, reconcile.Observed(), now=NOW, namespace="bench")
    assert [c["phase"] for c in out.status["cases"]] == ["Cancelled", "Cancelled"]  # a lost status write
    outs = reconcile.outcomes(cases, out.status, observed, run="r", spec=cancelled)
    doc = R.build_results("r", "s", cancelled, cases, outs, NOW, NOW, reconcile.run_environment("bench", outs))
    assert [c["phase"] for c in doc["cases"]] == ["Cancelled", "Cancelled"]
    assert doc["summary"]["cancelled"] == 2 and doc["summary"]["pending"] == 0
    assert "cancelled (spec.cancel)" in render_report(doc) and "2 cancelled" in render_report(doc)


def test_suspend_writes_a_partial_report_once():
    s = spec(pools=[{"name": "a"}], matrix={"models": ["tiny-qwen3"], "seqLens": [64, 128]}, suspend=True)
    run = copy.deepcopy(RUN)
    run["status"] = {"phase": "Running", "cases": [{"id": plan(s)[0].id, "phase": "Succeeded"}]}
    out = reconcile.reconcile(run, s, plan(s), reconcile.Observed(), now=NOW, namespace="bench")
    assert out.status["phase"] == "Suspended" and out.write_partial and not out.write_results
    run["status"] = out.status
    out = reconcile.reconcile(run, s, plan(s), reconcile.Observed(), now=NOW, namespace="bench")
    assert not out.write_partial  # once per suspension


# --- what ran --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_id", "pinned"),
    [
        (f"docker-pullable://registry.example/trainer@{DIGEST}", f"registry.example/trainer@{DIGEST}"),
        (f"registry.example/trainer@{DIGEST}", f"registry.example/trainer@{DIGEST}"),
        (DIGEST, f"registry.example/trainer@{DIGEST}"),  # containerd: the digest alone
        ("", None),
    ],
)
def test_image_digest_from_the_pods_image_id(image_id, pinned):
    p = {
        "spec": {"containers": [{"name": "trainer", "image": "registry.example/trainer:1.0"}]},
        "status": {"containerStatuses": [{"name": "trainer", "imageID": image_id}]},
    }
    digest, ref = reconcile.image_digest(p)
    assert ref == pinned and digest == (DIGEST if pinned else None)


def test_repro_command_is_the_pods_command_in_the_pinned_image():
    case = plan(spec())[0]
    line = K.repro_command(case, "r", f"registry.example/trainer@{DIGEST}", "/weights/x")
    argv = shlex.split(line)
    assert argv[:5] == ["podman", "run", "--rm", "--device", "nvidia.com/gpu=all"]
    assert "$WEIGHTS_DIR:/weights:ro" in argv  # the claim's files are mounted where the command reads them
    i = argv.index(f"registry.example/trainer@{DIGEST}")
    assert argv[i + 1 :] == K.trainer_command(case, "r", "", None) + ["--weights", "/weights/x"]
    assert "--device" not in K.repro_command(case, "r", "img", resource_name=None)  # a CPU pool


def test_the_report_shows_what_ran(tmp_path):
    s = spec(pools=[{"name": "a"}])
    cases = plan(s)
    env = {"image_revision": "0123456789abcdef", "image_created": "2026-12-01T00:04:42Z", "cudnn": 91002}
    outs = {
        cases[0].id: {
            "phase": "Failed",
            "reason": "Error",
            "message": "boom",
            "result": {"environment": env},
            "image": "trainer:1",
            "provenance": {"image_digest": DIGEST, "image_pinned": f"trainer@{DIGEST}"},
            "repro": f"podman run trainer@{DIGEST} torchrun x",
        }
    }
    doc = R.build_results("r", "s", s, cases, outs, NOW, NOW, reconcile.run_environment("bench", outs))
    assert doc["environment"]["commit"] == "0123456789abcdef" and doc["environment"]["image_digest"] == DIGEST
    assert doc["cases"][0]["repro"].startswith("podman run")
    md = render_report(doc)
    assert "**Commit:** `0123456789abcdef`" in md and f"**Docker Image:** `trainer@{DIGEST}`" in md
    assert "<details><summary>Reproduce a case</summary>" in md and f"podman run trainer@{DIGEST} torchrun x" in md
    assert "| sha256:abababababab | 0123456789ab |" in md
    # the same document read back renders the same report (what `trainbench report` does with results.json)
    R.write_results(doc, Path(tmp_path) / "results.json")
    assert render_report(R.load_results(tmp_path)) == md


def test_the_trainer_records_the_image_and_keeps_it_in_a_full_termination_message(monkeypatch):
    pytest.importorskip("torch")
    import torch

    from trainbench.trainer.result import environment, for_termination_log

    monkeypatch.setenv("TRAINBENCH_IMAGE_REVISION", "0123abc")
    monkeypatch.setenv("TRAINBENCH_IMAGE_CREATED", "2026-12-01T00:04:42Z")
    monkeypatch.setenv("NODE_NAME", "gpu-7")
    env = environment(torch.device("cpu"))
    assert (env["image_revision"], env["image_created"], env["node"]) == ("0123abc", "2026-12-01T00:04:42Z", "gpu-7")
    assert {"cudnn", "nccl", "flash_attn", "transformers", "torch"} <= set(env)
    big = {"schema": "x", "config": {"model": "m", "blob": "y" * 5000}, "environment": {**env, "pad": "z" * 3000}}
    kept = json.loads(for_termination_log(big))
    assert kept["environment"]["image_revision"] == "0123abc" and "pad" not in kept["environment"]


def test_kueue_admitted_flavor_is_recorded():
    s = spec(pools=[{"name": "a", "nodeSelector": {"pool": "a"}}], queueName="team-a")
    cases = plan(s)
    job = K.job_name("r", cases[0].id)
    workloads = [
        {
            "metadata": {"ownerReferences": [{"kind": "Job", "name": job}]},
            "status": {"admission": {"podSetAssignments": [{"flavors": {"nvidia.com/gpu": "h100-spot"}}]}},
        },
        {"metadata": {"ownerReferences": [{"kind": "Job", "name": "other"}]}, "status": {}},  # not admitted
    ]
    flavors = reconcile.kueue_flavors(workloads)
    assert flavors == {job: "h100-spot"}
    p = {
        "spec": {
            "nodeSelector": {"pool": "a", "cloud.example/spot": "true"},
            "containers": [{"name": "trainer", "image": "t:1"}],
        },
        "status": {"containerStatuses": [{"name": "trainer", "imageID": f"t@{DIGEST}"}]},
    }
    observed = reconcile.Observed(pods={job: [p]}, flavors=flavors)
    status = {"cases": [{"id": cases[0].id, "job": job, "phase": "Succeeded"}]}
    env = reconcile.outcomes(cases, status, observed, run="r", spec=s)[cases[0].id]["provenance"]
    assert env["kueue_flavor"] == "h100-spot" and env["kueue_flavor_node_labels"] == {"cloud.example/spot": "true"}
