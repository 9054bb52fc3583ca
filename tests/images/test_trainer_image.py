"""The CPU trainer image, built for real: the cpu-smoke suite through the local executor inside the container,
and one case through exactly the command line, environment and security settings the operator puts into its Job
(operator/kube.py build_job)."""

from __future__ import annotations

import json

import pytest
import yaml

from .conftest import ROOT

SMOKE = ROOT / "examples" / "cpu-smoke.yaml"
pytestmark = pytest.mark.timeout(900)


def test_provenance_and_pinned_versions(engine, trainer_image, built):
    info = engine.inspect(trainer_image)
    labels = info["Config"]["Labels"]
    entry = built["images"]["trainer-cpu"]
    assert labels["org.opencontainers.image.title"] == "trainbench-trainer-cpu"
    assert labels["org.opencontainers.image.revision"] == entry["revision"] != "unknown"
    assert labels["org.opencontainers.image.created"] == entry["created"]
    assert info["Config"]["User"] == "10001:10001"
    # what the trainer process sees (the provenance the results record) and what is installed
    code = (
        "import os, json, importlib.metadata as m, torch; "
        "print(json.dumps({'env': {k: v for k, v in os.environ.items() if k.startswith('TRAINBENCH_IMAGE_')}, "
        "'versions': {k: m.version(k) for k in ('torch', 'transformers', 'peft')}, 'cuda': torch.version.cuda}))"
    )
    seen = json.loads(engine("run", "--rm", "--entrypoint", "python", trainer_image, "-c", code).stdout)
    assert seen["env"] == {
        "TRAINBENCH_IMAGE_TITLE": "trainbench-trainer-cpu",
        "TRAINBENCH_IMAGE_VERSION": labels["org.opencontainers.image.version"],
        "TRAINBENCH_IMAGE_REVISION": entry["revision"],
        "TRAINBENCH_IMAGE_CREATED": entry["created"],
    }
    assert seen["cuda"] is None
    for pkg in ("torch", "transformers", "peft"):
        assert seen["versions"][pkg].split("+")[0] == labels[f"dev.trainbench.{pkg}.version"], pkg


def test_cpu_smoke_suite_through_the_local_executor(engine, trainer_image, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image runs as uid 10001
    proc = engine(
        "run", "--rm", "-v", f"{ROOT / 'examples'}:/examples:ro", "-v", f"{out}:/out",
        trainer_image, "run", "/examples/cpu-smoke.yaml", "--local", "--out", "/out", "--device", "cpu", "--no-progress",
        timeout=840, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    phases = {c["id"]: c["phase"] for c in results["cases"]}
    assert len(phases) == 5 and set(phases.values()) == {"Succeeded"}, phases
    assert all(c["metrics"] for c in results["cases"])
    assert (out / "report.md").read_text().startswith("# Performance Benchmarks: cpu-smoke")


def _job_container() -> tuple[dict, dict, str]:
    """The container and pod spec of the first cpu-smoke case's Job, built by the operator's own code here."""
    from trainbench.operator import kube
    from trainbench.operator.api import parse_spec
    from trainbench.operator.plan import plan

    doc = yaml.safe_load(SMOKE.read_text())
    run = {**doc, "metadata": {"name": "cpu-smoke", "namespace": "default", "uid": "00000000-test"}}
    spec = parse_spec(doc["spec"])
    case = plan(spec)[0]
    job = kube.build_job(run, case, namespace="default", pod=kube.PodSettings.for_pool(spec.pools[0]))
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container, pod, case.id


def test_a_case_through_the_jobs_command_line(engine, trainer_image, tmp_path):
    """`command` replaces the image's ENTRYPOINT, as Kubernetes does; the env, the termination message file,
    /dev/shm from an emptyDir(Memory) and the container security settings as the Job has them."""
    container, pod, case_id = _job_container()
    command = container["command"]
    assert command[0] == "torchrun" and "trainbench.trainer" in command
    env = []
    for e in container["env"]:
        if "value" in e:
            env += ["-e", f"{e['name']}={e['value']}"]
        else:  # the downward API: spec.nodeName
            assert e["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, e
            env += ["-e", f"{e['name']}=image-smoke-node"]
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}, sc
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/dev/shm"]
    (dshm,) = pod["volumes"]
    assert dshm["emptyDir"]["medium"] == "Memory"
    term = tmp_path / "termination-log"
    term.write_text("")
    term.chmod(0o666)
    proc = engine(
        "run", "--rm", "--security-opt=no-new-privileges", "--cap-drop=ALL", "--ipc=private",
        "--tmpfs=/dev/shm:rw,size=256m", "-v", f"{term}:{container['terminationMessagePath']}",
        *env, "--entrypoint", command[0], trainer_image, *command[1:],
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from trainbench.operator import collect

    # the operator's own reading of the termination message (what the pod's status would carry)
    result = collect.parse_result(term.read_text())
    assert result, f"no result in the termination message: {term.read_text()[:500]!r}"
    assert case_id in json.dumps(result), result
