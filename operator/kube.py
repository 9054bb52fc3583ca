"""Kubernetes objects for a BenchmarkRun: pure builders (dicts in, dicts out), no I/O.

One batch/v1 Job per case, named deterministically from the run and the case id so that a restarted
operator finds the Jobs it created instead of creating them twice; a case on several nodes is an Indexed
Job with a headless Service, or (spec.multiNode.engine JobSet) one jobset.x-k8s.io/v1alpha2 JobSet whose
single replicated Job is that same Indexed Job. Every object is owned by the run (ownerReferences), so
deleting the run deletes its Jobs, JobSets, Services and ConfigMaps.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field

from trainbench.operator.api import API_VERSION, KIND
from trainbench.operator.plan import Case
from trainbench.trainer.contract import METRICS_PORT


@dataclass(frozen=True)
class PodSettings:
    """What a pool (and the operator's configuration) puts into every trainer pod of its cases."""

    resource_name: str = "nvidia.com/gpu"
    node_selector: dict = field(default_factory=dict)
    tolerations: list = field(default_factory=list)
    cpu: str | None = None
    memory: str | None = None
    metrics_port: int = METRICS_PORT
    pod_annotations: dict = field(default_factory=dict)
    compile_cache_claim: str | None = None  # the pool's compile-cache PersistentVolumeClaim
    # the merged pod template (api.PodTemplate as camelCase dict: operator defaults < spec.podTemplate < pool's)
    template: dict = field(default_factory=dict)
    weights_claim: str | None = None  # the case model's weights (spec.weights): claim and path inside it
    weights_path: str | None = None

    @classmethod
    def for_pool(
        cls,
        pool,
        pod_annotations: dict | None = None,
        run_template=None,
        defaults: dict | None = None,
    ) -> PodSettings:
        """From a parsed `api.Pool`; `run_template` is spec.podTemplate, `defaults` the operator's trainer pod
        defaults (TRAINBENCH_TRAINER_POD_DEFAULTS), the lowest priority."""
        cache = pool.compile_cache
        return cls(
            resource_name=pool.resource_name,
            node_selector=dict(pool.node_selector),
            tolerations=[tol.model_dump(by_alias=True, exclude_none=True) for tol in pool.tolerations],
            cpu=pool.cpu,
            memory=pool.memory,
            pod_annotations=dict(pod_annotations or {}),
            compile_cache_claim=cache.persistent_volume_claim.claim_name if cache else None,
            template=merge_pod_templates(defaults, run_template, getattr(pool, "pod_template", None)),
        )


def _template_dict(template) -> dict:
    if template is None:
        return {}
    if hasattr(template, "model_dump"):
        return template.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True, mode="json")
    return dict(template)


def _merge_named(low: list, high: list, key: str) -> list:
    """Lists of objects with a name (env, volumes, mounts, pull secrets): `high` wins on the same name."""
    out = {item.get(key): item for item in low or []}
    out.update({item.get(key): item for item in high or []})
    return list(out.values())


def merge_pod_templates(*templates) -> dict:
    """Pod templates merged in priority order (later wins), field by field: scalars replace, maps merge, lists of
    named objects merge by name (env, volumes, volumeMounts by mountPath, imagePullSecrets), resources merge per
    requests/limits. Each template: an api.PodTemplate, its camelCase dict, or None."""
    out: dict = {}
    for template in templates:
        t = _template_dict(template)
        for key, value in t.items():
            if value in (None, "", [], {}):
                continue
            if key in ("labels", "annotations"):
                out[key] = {**out.get(key, {}), **value}
            elif key == "resources":
                old = out.get(key, {})
                out[key] = {k: {**old.get(k, {}), **value.get(k, {})} for k in ("requests", "limits")}
            elif key in ("env", "volumes", "imagePullSecrets"):
                out[key] = _merge_named(out.get(key, []), value, "name")
            elif key == "volumeMounts":
                out[key] = _merge_named(out.get(key, []), value, "mountPath")
            else:
                out[key] = value
    return out


def case_weights(weights: dict, case: Case) -> tuple[str | None, str] | None:
    """(claim or None, path) of the weights spec.weights gives `case`'s model (named by its short name or its
    Hugging Face id); None: random weights."""
    for key in (case.model, case.hf_name):
        w = (weights or {}).get(key)
        if w is not None:
            claim = w.persistent_volume_claim.claim_name if w.persistent_volume_claim else None
            return claim, w.path
    return None


# --- labels and annotations -----------------------------------------------------------------------------
L_NAME = "app.kubernetes.io/name"
L_COMPONENT = "app.kubernetes.io/component"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_RUN = "trainbench.dev/run"
L_CASE = "trainbench.dev/case"
L_POOL = "trainbench.dev/pool"
L_SUITE = "trainbench.dev/suite"
L_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
L_JOB_INDEX = "batch.kubernetes.io/job-completion-index"  # set by the Job controller on indexed pods
A_METRICS_PORT = "trainbench.dev/metrics-port"  # on the pod template: where rank 0 serves /metrics
A_CASE = "trainbench.dev/case-config"  # on the Job: the case as JSON (for humans and `kubectl describe`)
MANAGER = "trainbench-operator"
# Kubernetes refuses a ConfigMap whose data exceeds 1 MiB (keys and values together); trainbench keeps the
# whole serialised object under it, and one value (results.json, history.json) under it less 64 KiB of room
# for the metadata and the other keys.
CONFIGMAP_LIMIT_BYTES = 1024 * 1024
CONFIGMAP_VALUE_LIMIT_BYTES = CONFIGMAP_LIMIT_BYTES - 64 * 1024

# --- JobSet (jobset.x-k8s.io), the multi-node engine a run can ask for -----------------------------------------
ENGINE_JOB = "Job"
ENGINE_JOBSET = "JobSet"
JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_API_VERSION = f"{JOBSET_GROUP}/{JOBSET_VERSION}"
JOBSET_PLURAL = "jobsets"
JOBSET_REPLICATED_JOB = "node"  # the one role of a case's JobSet (Kubeflow Trainer names its node role so too)
L_JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"  # set by the JobSet controller on its child Jobs and their pods
# JobSet's webhook refuses a JobSet whose longest pod name `<jobset>-node-0-<index>-xxxxx` is not a DNS-1035
# label (63 characters): 16 characters go to "-node-0-63-xxxxx" (nodes <= 64), 47 are left for the JobSet
JOBSET_NAME_MAX = 63 - len(f"-{JOBSET_REPLICATED_JOB}-0-63-xxxxx")

CONTAINER = "trainer"
METRICS_PORT_NAME = "metrics"
RDZV_PORT = 29500
TERMINATION_MESSAGE_PATH = "/dev/termination-log"

# --- the compile cache (spec.pools[].compileCache) ---------------------------------------------------------------
COMPILE_CACHE_VOLUME = "compile-cache"
COMPILE_CACHE_PATH = "/cache"
# torch's own knobs (torch/_inductor/config.py, torch/_functorch/config.py, triton): inductor's FX graph cache and
# AOTAutograd cache are on by default in open-source torch; the two =1 force them on so a pool with a cache volume
# never silently compiles from scratch. Their cache keys hold the torch and Triton versions, the GPU and the
# compile options, so one directory serves every image and GPU of a pool (docs/operator.md "Compile cache").
COMPILE_CACHE_ENV = (
    ("TORCHINDUCTOR_CACHE_DIR", f"{COMPILE_CACHE_PATH}/inductor"),  # FX graphs, AOTAutograd, autotuning
    ("TRITON_CACHE_DIR", f"{COMPILE_CACHE_PATH}/triton"),  # compiled Triton kernels (cubins)
    ("TORCHINDUCTOR_FX_GRAPH_CACHE", "1"),
    ("TORCHINDUCTOR_AUTOGRAD_CACHE", "1"),
)

# --- real weights (spec.weights): the model's claim, read-only ------------------------------------------------------
WEIGHTS_VOLUME = "weights"
WEIGHTS_PATH = "/weights"

_DNS = re.compile(r"[^a-z0-9-]+")


def _dns(text: str, limit: int) -> str:
    return _DNS.sub("-", text.lower()).strip("-")[:limit].rstrip("-")


def label_value(text: str) -> str:
    """A label value (<= 63 characters); long values keep a readable head and a hash for uniqueness."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:54].rstrip('-._')}-{digest}"


def job_name(run: str, case_id: str, limit: int = 63) -> str:
    """`<run>-<case>` shortened to a DNS label (`limit` chars), with a hash of both so names never collide. It
    starts with a letter (a run named `1st-...` gets `r1st-...`): a multi-node case's headless Service has the
    Job's name, and a Service name is a DNS-1035 label."""
    digest = hashlib.sha256(f"{run}/{case_id}".encode()).hexdigest()[:6]
    head = _dns(run, min(24, limit // 2))
    if not head[:1].isalpha():
        head = ("r" + head)[: min(24, limit // 2)].rstrip("-")
    rest = _dns(case_id, limit - len(head) - len(digest) - 2)
    return f"{head}-{rest}-{digest}".replace("--", "-")


def engine(case: Case, multi_node_engine: str = ENGINE_JOB) -> str:
    """What runs `case`: a JobSet only for a case on several nodes of a run that asks for one, else a Job."""
    return ENGINE_JOBSET if case.nodes > 1 and multi_node_engine == ENGINE_JOBSET else ENGINE_JOB


def jobset_name(run: str, case_id: str) -> str:
    """The JobSet of a case: the Job name's scheme, shortened to JOBSET_NAME_MAX and starting with a letter (the
    JobSet webhook wants DNS-1035 names for the Jobs and pods it derives)."""
    name = job_name(run, case_id, JOBSET_NAME_MAX)
    return name if name[:1].isalpha() else "j" + job_name(run, case_id, JOBSET_NAME_MAX - 1)


def jobset_job_name(jobset: str, job_index: int = 0) -> str:
    """The child Job the JobSet controller makes: `<jobset>-<replicatedJob>-<jobIndex>`."""
    return f"{jobset}-{JOBSET_REPLICATED_JOB}-{job_index}"


def case_job_name(run: str, case: Case, multi_node_engine: str = ENGINE_JOB) -> str:
    """The Job whose pods run `case` (for a JobSet case, the JobSet's child Job)."""
    if engine(case, multi_node_engine) == ENGINE_JOBSET:
        return jobset_job_name(jobset_name(run, case.id))
    return job_name(run, case.id)


def _suffixed(run: str, suffix: str, limit: int = 253) -> str:
    """`<run><suffix>` as an object name of at most `limit` characters: a run name too long for it keeps a head
    and a hash of the whole name (names of different runs never collide; `-results` and `-report` never meet)."""
    if len(run) + len(suffix) <= limit:
        return f"{run}{suffix}"
    digest = hashlib.sha256(run.encode()).hexdigest()[:10]
    return f"{run[: limit - len(suffix) - 11].rstrip('-.')}-{digest}{suffix}"


def results_configmap_name(run: str) -> str:
    return _suffixed(run, "-results")


def report_configmap_name(run: str) -> str:
    return _suffixed(run, "-report")


def acks_configmap_name(suite: str) -> str:
    """The suite's acknowledged change points and accepted baselines (`trainbench baseline ...`): not owned by a
    run, it outlives them all."""
    return _suffixed(suite, "-acks")


def history_configmap_name(suite: str) -> str:
    """The suite's history (results/history.py), appended at each run's finish: not owned by a run, so deleting
    runs (a user, `trainbench submit`'s history limits) never deletes the history the baselines pool."""
    return _suffixed(suite, "-history")


def owner_reference(run: dict) -> dict:
    meta = run["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def run_labels(run: dict, suite: str | None = None) -> dict:
    labels = {
        L_NAME: "trainbench",
        L_MANAGED_BY: MANAGER,
        L_RUN: label_value(run["metadata"]["name"]),
    }
    if suite:
        labels[L_SUITE] = label_value(suite)
    return labels


def case_labels(run: dict, case: Case, suite: str | None = None) -> dict:
    return {**run_labels(run, suite), L_COMPONENT: "case", L_CASE: label_value(case.id), L_POOL: case.pool}


def run_selector(run_name: str) -> str:
    """Label selector for everything a run owns."""
    return f"{L_RUN}={label_value(run_name)}"


def _quantity_resources(
    case: Case, resource_name: str, cpu: str | None, memory: str | None, extra: dict | None = None
) -> dict:
    """The GPUs (and the pool's cpu/memory) as requests = limits, plus the pod template's extra resources (an extra
    limit without its own request is requested as much, as Kubernetes requires of extended resources)."""
    limits: dict[str, str] = {resource_name: str(case.gpus_per_node)}
    if cpu:
        limits["cpu"] = cpu
    if memory:
        limits["memory"] = memory
    own = set(limits)  # the pool's GPUs, cpu and memory are not overridden by the template
    requests = dict(limits)
    extra = extra or {}
    for name, value in (extra.get("requests") or {}).items():
        if name not in own:
            requests[name] = str(value)
    for name, value in (extra.get("limits") or {}).items():
        if name not in own:
            limits[name] = str(value)
            requests.setdefault(name, str(value))
    return {"requests": requests, "limits": limits}


REPRO_DEVICES = {
    "nvidia.com/gpu": "--device nvidia.com/gpu=all ",
    "amd.com/gpu": "--device /dev/kfd --device /dev/dri ",
}


def repro_command(
    case: Case, run: str, image: str, weights: str | None = None, resource_name: str | None = "nvidia.com/gpu"
) -> str:
    """One line that runs `case` again by hand: the exact trainer command of its pod in `image` (pinned by digest
    where known) under podman with the pool's GPUs (CDI for NVIDIA, the device nodes for AMD; none for a CPU
    pool, `resource_name` None); a case of several nodes needs torchrun's PET_* environment as the Job sets it."""
    cmd = trainer_command(case, run, "", None)
    if weights:
        cmd += ["--weights", weights]
    gpu = REPRO_DEVICES.get(resource_name or "", "")
    node_env = "" if case.nodes == 1 else "-e PET_NODE_RANK=<rank> -e PET_MASTER_ADDR=<rank-0 host> --network host "
    # the weights claim's files, wherever they are on the machine that runs the line
    mount = f'-v "$WEIGHTS_DIR":{WEIGHTS_PATH}:ro ' if weights and weights.startswith(WEIGHTS_PATH + "/") else ""
    return f"podman run --rm {gpu}--ipc host {node_env}{mount}{shlex.quote(image)} " + shlex.join(cmd)


def trainer_command(case: Case, run: str, name: str, metrics_port: int = METRICS_PORT) -> list[str]:
    """torchrun with one process per GPU, then the trainer with exactly `Case.trainer_args()`.

    One node: `--standalone`. Several nodes: the node rank, the rendezvous address and port come from the
    PET_* environment (`torchrun_env`), the contract Kubeflow Trainer uses, so the command is the same on
    every pod of the Indexed Job."""
    cmd = ["torchrun", f"--nproc-per-node={case.gpus_per_node}", f"--nnodes={case.nodes}"]
    if case.nodes == 1:
        cmd += ["--standalone"]
    return cmd + ["-m", "trainbench.trainer", *case.trainer_args(run=run, metrics_port=metrics_port)]


def weights_arg(pod: PodSettings) -> str | None:
    """The --weights path of a trainer pod whose case has real weights (the claim mounted at WEIGHTS_PATH)."""
    if not pod.weights_path:
        return None
    if not pod.weights_claim:
        return pod.weights_path
    return f"{WEIGHTS_PATH}/{pod.weights_path.lstrip('/')}".rstrip("/")


def master_addr(name: str, multi_node_engine: str = ENGINE_JOB) -> str:
    """The stable DNS name of a multi-node case's pod of index 0, where torchrun's rendezvous is.

    Job: the pods of Indexed Job `name` get hostnames `<job>-<index>` under the headless Service `name`.
    JobSet `name`: the child Job is `<jobset>-<replicatedJob>-<jobIndex>`, so its pods are
    `<jobset>-<replicatedJob>-<jobIndex>-<podIndex>` under the Service JobSet makes (subdomain: the JobSet name)."""
    if multi_node_engine == ENGINE_JOBSET:
        return f"{jobset_job_name(name)}-0.{name}"
    return f"{name}-0.{name}"


def torchrun_env(case: Case, name: str, multi_node_engine: str = ENGINE_JOB) -> list[dict]:
    """torchrun reads PET_<OPTION> for each option it is not given (Kubeflow Trainer's environment contract):
    PET_NODE_RANK is the pod's completion index, PET_MASTER_ADDR the stable DNS name of index 0 (`master_addr`;
    `name` is the Job's, or the JobSet's)."""
    env = [
        {"name": "PET_NNODES", "value": str(case.nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(case.gpus_per_node)},
    ]
    if case.nodes > 1:
        index = {"fieldRef": {"fieldPath": f"metadata.annotations['{L_JOB_INDEX}']"}}
        env += [
            {"name": "PET_NODE_RANK", "valueFrom": index},
            {"name": "PET_MASTER_ADDR", "value": master_addr(name, multi_node_engine)},
            {"name": "PET_MASTER_PORT", "value": str(RDZV_PORT)},
        ]
    return env


def build_job(
    run: dict,
    case: Case,
    *,
    namespace: str,
    pod: PodSettings | None = None,
    queue_name: str | None = None,
    suite: str | None = None,
) -> dict:
    """The batch/v1 Job of one case (see docs/operator.md "What a case's Job looks like")."""
    pod = pod or PodSettings()
    name = job_name(run["metadata"]["name"], case.id)
    labels = case_labels(run, case, suite)
    job_spec = _job_spec(run, case, name=name, multi_node_engine=ENGINE_JOB, labels=labels, pod=pod)
    if case.nodes > 1:
        job_spec["template"]["spec"]["subdomain"] = name  # the headless Service `build_service` makes
    if queue_name:
        labels = {**labels, L_KUEUE_QUEUE: queue_name}
        job_spec["suspend"] = True  # Kueue admits the Job by unsuspending it
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {A_CASE: json.dumps(case.to_dict(), sort_keys=True)},
            "ownerReferences": [owner_reference(run)],
        },
        "spec": job_spec,
    }


def build_jobset(
    run: dict,
    case: Case,
    *,
    namespace: str,
    pod: PodSettings | None = None,
    queue_name: str | None = None,
    suite: str | None = None,
) -> dict:
    """The jobset.x-k8s.io/v1alpha2 JobSet of a multi-node case (spec.multiNode.engine JobSet): one replicated
    Job `node` (replicas 1) whose template is the Indexed Job `build_job` makes (same pods, env, labels), with
    JobSet's DNS hostnames instead of a Service of ours, no restarts (a failed pod fails the case) and success
    when every pod succeeded. With `queue_name`, the JobSet carries Kueue's label and starts suspended: Kueue
    admits the JobSet as one workload (all pods together) by unsuspending it."""
    pod = pod or PodSettings()
    if case.nodes <= 1:
        raise ValueError(f"case {case.id} runs on one node: a plain Job, not a JobSet")
    name = jobset_name(run["metadata"]["name"], case.id)
    labels = case_labels(run, case, suite)
    job_spec = _job_spec(run, case, name=name, multi_node_engine=ENGINE_JOBSET, labels=labels, pod=pod)
    annotations = {A_CASE: json.dumps(case.to_dict(), sort_keys=True)}
    spec: dict = {
        "replicatedJobs": [
            {
                "name": JOBSET_REPLICATED_JOB,
                "replicas": 1,
                # the child Job takes these labels (so it is listed with the run's Jobs) and annotations
                "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": job_spec},
            }
        ],
        # JobSet makes a headless Service named after the JobSet and gives each pod the subdomain
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True},
        "failurePolicy": {"maxRestarts": 0},  # one pod's failure fails the case (as podFailurePolicy does)
        "successPolicy": {"operator": "All"},
    }
    if queue_name:
        labels = {**labels, L_KUEUE_QUEUE: queue_name}
        spec["suspend"] = True  # Kueue admits the whole JobSet by unsuspending it
    return {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": spec,
    }


def _job_spec(run: dict, case: Case, *, name: str, multi_node_engine: str, labels: dict, pod: PodSettings) -> dict:
    """The spec of a case's Job (plain, or a JobSet's replicated Job): the pods, their command and limits.
    With `pod.compile_cache_claim`, the PersistentVolumeClaim of the pool's compile cache is mounted at
    COMPILE_CACHE_PATH and torch's cache directories point into it (COMPILE_CACHE_ENV)."""
    run_name = run["metadata"]["name"]
    tpl = pod.template or {}
    pod_labels = {**(tpl.get("labels") or {}), **labels}  # the operator's own labels win
    container = {
        "name": CONTAINER,
        "image": case.image,
        "imagePullPolicy": "IfNotPresent",
        "command": trainer_command(case, run_name, name, pod.metrics_port)
        + (["--weights", weights_arg(pod)] if weights_arg(pod) else []),
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "TRAINBENCH_RUN", "value": run_name},
            {"name": "TRAINBENCH_CASE", "value": case.id},
            {"name": "TRAINBENCH_POOL", "value": case.pool},
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            *torchrun_env(case, name, multi_node_engine),
        ],
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": pod.metrics_port, "protocol": "TCP"}],
        "resources": _quantity_resources(case, pod.resource_name, pod.cpu, pod.memory, tpl.get("resources")),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod_spec: dict = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if pod.memory:
        pod_spec["volumes"][0]["emptyDir"]["sizeLimit"] = pod.memory
    if pod.compile_cache_claim:
        container["env"] += [{"name": k, "value": v} for k, v in COMPILE_CACHE_ENV]
        container["volumeMounts"].append({"name": COMPILE_CACHE_VOLUME, "mountPath": COMPILE_CACHE_PATH})
        pod_spec["volumes"].append(
            {"name": COMPILE_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": pod.compile_cache_claim}}
        )
    if pod.weights_claim:
        container["volumeMounts"].append({"name": WEIGHTS_VOLUME, "mountPath": WEIGHTS_PATH, "readOnly": True})
        pod_spec["volumes"].append(
            {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": pod.weights_claim, "readOnly": True}}
        )
    _apply_template(tpl, pod_spec, container)
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pod.tolerations]
    job_spec: dict = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": case.timeout_seconds,
        "completions": case.nodes,
        "parallelism": case.nodes,
        # a node going away (DisruptionTarget) retries the pod; an application failure fails the Job at once
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
            ]
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    **pod.pod_annotations,
                    **(tpl.get("annotations") or {}),
                    A_METRICS_PORT: str(pod.metrics_port),
                },
            },
            "spec": pod_spec,
        },
    }
    if case.nodes > 1:
        job_spec["completionMode"] = "Indexed"
        container["ports"].append({"name": "rdzv", "containerPort": RDZV_PORT, "protocol": "TCP"})
    return job_spec


def _apply_template(tpl: dict, pod_spec: dict, container: dict) -> None:
    """The merged pod template on a trainer pod: pod fields, extra env (the operator's own variables win),
    volumes and mounts (the operator's names and paths win)."""
    for key in ("serviceAccountName", "priorityClassName", "runtimeClassName", "affinity"):
        if tpl.get(key):
            pod_spec[key] = tpl[key]
    if tpl.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = [{"name": s["name"]} for s in tpl["imagePullSecrets"]]
    own_env = {e["name"] for e in container["env"]}
    container["env"] = [e for e in tpl.get("env") or [] if e["name"] not in own_env] + container["env"]
    own_volumes = {v["name"] for v in pod_spec["volumes"]}
    pod_spec["volumes"] += [v for v in tpl.get("volumes") or [] if v["name"] not in own_volumes]
    own_paths = {m["mountPath"] for m in container["volumeMounts"]}
    container["volumeMounts"] += [m for m in tpl.get("volumeMounts") or [] if m["mountPath"] not in own_paths]


def build_service(run: dict, case: Case, *, namespace: str, suite: str | None = None) -> dict | None:
    """The headless Service that gives a multi-node case's pods stable DNS names; None for one node."""
    if case.nodes <= 1:
        return None
    name = job_name(run["metadata"]["name"], case.id)
    labels = case_labels(run, case, suite)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_reference(run)]},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {L_RUN: labels[L_RUN], L_CASE: labels[L_CASE]},
            "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT}],
        },
    }


def build_configmap(run: dict, name: str, data: dict[str, str], *, namespace: str, suite: str | None = None) -> dict:
    labels = {**run_labels(run, suite), L_COMPONENT: "results"}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner_reference(run)]},
        "data": dict(data),
    }


def metrics_url(pod: dict) -> str | None:
    """Where a running pod's rank 0 serves /metrics: pod IP and the container port named `metrics`
    (else the pod annotation, else the contract's default); None before the pod has an IP."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None
    port = None
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == METRICS_PORT_NAME:
                port = p.get("containerPort")
    if port is None:
        port = ((pod.get("metadata") or {}).get("annotations") or {}).get(A_METRICS_PORT, METRICS_PORT)
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{int(port)}/metrics"


def is_rank0(pod: dict) -> bool:
    """Rank 0 is the pod of completion index 0 (indexed Jobs) or the only pod."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    index = labels.get(L_JOB_INDEX, annotations.get("batch.kubernetes.io/job-completion-index", "0"))
    return str(index) == "0"
