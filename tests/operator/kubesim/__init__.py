"""A small Kubernetes for the operator tests: KMock's KubernetesEmulator plus what a real cluster adds.

Modules: `apiserver` (KubeSim), `schema` (the CRD's schema and CEL), `openapi`, `table`, the controllers `jobs`,
`jobset`, `scheduler`, `kubelet` (run together by `controllers`), `cluster` (all of it in a thread), `common`.

The operator under test (kopf, the kubernetes client) and `kubectl` talk to it over real HTTP through a
generated kubeconfig. KMock 0.8 stores objects, serves list/watch/get/create/patch/delete and streams
watch events; this subclass adds, in `KubeSim`:

- discovery that kubectl understands (core/v1 and batch/v1 resources, the CRD's kind, short name, category);
- `kind`/`apiVersion`/`resourceVersion` on lists; uid, resourceVersion, generation, creationTimestamp on
  objects; label selectors on lists;
- the status subresource (a status patch changes only status; a main patch never changes status);
- the CRD's openAPIV3Schema on create and update: defaults, type/enum/minimum/pattern checks (jsonschema)
  and the x-kubernetes-validations CEL rules (cel-python), answering 422 Invalid like an API server; unknown
  fields refused (400) under fieldValidation=Strict, which kubectl sends by default (it finds the parameter in
  the OpenAPI v3 served here), pruned otherwise; tests/crd checks all of this against the real API server;
- server-side Table printing for `kubectl get` with the CRD's additionalPrinterColumns;
- garbage collection of objects whose owner (ownerReferences uid) is gone;
- pods' `log` subresource;
- fault injection (`faults.FaultPlan`, `Cluster(faults=...)`): API errors, slow and lost answers, watch lag,
  a TTL controller for finished Jobs, stand-in trainers with any termination message.

`Cluster` runs the server in a background thread with the controllers that the emulator lacks:
- a Job controller (Job -> Pod, Job conditions Complete/Failed, activeDeadlineSeconds, suspend),
- a scheduler (nodeSelector against fake nodes; no match -> PodScheduled=False Unschedulable),
- with `jobset=True` only (else discovery does not list it, as on a cluster without JobSet): the JobSet API
  (jobset.x-k8s.io/v1alpha2 jobsets, each create checked against JobSet's schema, `jobset_schema.py`) and a
  JobSet controller: once a JobSet is not suspended, the headless Service and the child Job of each
  replicated Job, labelled and with pod subdomain as JobSet sets them, and the child Jobs' outcome mirrored
  into the JobSet's Completed / Failed condition;
- cluster DNS for a multi-node case's rendezvous: PET_MASTER_ADDR `<hostname>.<subdomain>` resolves (to
  127.0.0.1) only when a headless Service `<subdomain>` and a pod with that hostname and subdomain exist;
  otherwise the pod fails at once, as torchrun would after failing to resolve it;
- a kubelet that runs the pod's command as a local process: `torchrun ... -m trainbench.trainer ARGS`
  becomes `python -m trainbench.trainer ARGS --device cpu --output <termination file>`; each pod gets
  podIP 127.0.0.1 and its own free metrics port (rewritten in the pod's container port and
  `--metrics-port`); exit -> terminated state with exit code and termination message (the trainer's
  output file, or the log tail with FallbackToLogsOnError); a memory limit is enforced by watching the
  process's RSS (over it: SIGKILL, reason OOMKilled, exit 137); images under `missing.example/` cannot be
  pulled (ImagePullBackOff).
"""

from .apiserver import CORE, VERBS, KubeSim
from .cluster import Cluster
from .common import (
    CRD_PATH,
    JOBS,
    JOBSET_LABEL,
    JOBSETS,
    MISSING_IMAGE_PREFIX,
    NODES,
    PODS,
    REPO,
    SERVICES,
    apply_patch,
    free_port,
    merge_diff,
    now_iso,
)
from .controllers import Controllers
from .faults import FaultPlan, Rule
from .kubelet import translate_command
from .schema import SchemaValidator, apply_defaults, cel_errors, prune, unknown_fields

__all__ = [
    "CORE",
    "CRD_PATH",
    "JOBS",
    "JOBSETS",
    "JOBSET_LABEL",
    "MISSING_IMAGE_PREFIX",
    "NODES",
    "PODS",
    "REPO",
    "SERVICES",
    "VERBS",
    "Cluster",
    "Controllers",
    "FaultPlan",
    "KubeSim",
    "Rule",
    "SchemaValidator",
    "apply_defaults",
    "apply_patch",
    "cel_errors",
    "free_port",
    "merge_diff",
    "now_iso",
    "prune",
    "translate_command",
    "unknown_fields",
]
