"""The kopf handlers: thin I/O around the pure `reconcile` module.

One timer per BenchmarkRun recomputes everything from what is in the cluster (level-based): list the
run's Jobs (and JobSets, for a run with multiNode.engine JobSet, after asking discovery whether the cluster
serves them) and Pods, scrape the running rank-0 pods, read termination messages and logs of pods that
ended, then create the Jobs the pools have room for, write the status and post an Event per transition.
When every case has ended and the run's `<run>-results` ConfigMap is not there (observed, not read from
the status), it finishes the run with report.finalize and writes the `<run>-report` and `<run>-results`
ConfigMaps. The webhook goes out on a later tick, once a written status records the results. A spec that
cannot run gets phase Failed, a SpecValid=False condition and a Warning Event naming the field; other
runs are unaffected (each run is its own timer, and nothing here raises for one run's bad input).

`register(registry, config)` attaches the handlers to a kopf registry; `runner.py` runs kopf with it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field

import kopf

from trainbench.operator import collect
from trainbench.operator import kube as K
from trainbench.operator.api import GROUP, PLURAL, VERSION, SpecError, parse_spec
from trainbench.operator.clock import iso, now
from trainbench.operator.controller import failures, publish, reconcile, webhook
from trainbench.operator.controller import suite as S
from trainbench.operator.controller.client import Api, api_message, request_timeout
from trainbench.operator.controller.metrics import OperatorMetrics
from trainbench.operator.plan import plan, with_repeats
from trainbench.operator.report import finalize
from trainbench.operator.results import baseline as B
from trainbench.operator.results import document as R
from trainbench.operator.results import verdict as V
from trainbench.operator.results.repeats import group_outcomes

log = logging.getLogger("trainbench.operator")
A_WEBHOOK = "trainbench.dev/webhook-sent"  # on a run's results ConfigMap: when its webhook message went out


@dataclass
class Config:
    interval: float = 10.0  # seconds between reconciliations of one run
    scrape_timeout: float = 2.0
    unschedulable_grace_s: float = failures.UNSCHEDULABLE_GRACE_S
    image_pull_grace_s: float = failures.IMAGE_PULL_GRACE_S
    watch_server_timeout: int = 300  # the API server ends each watch after this long; kopf re-lists
    watch_client_timeout: int = 330
    log_lines: int = 20
    discovery_ttl: float = 60.0  # seconds a discovery answer (is the JobSet API served?) is reused
    pod_annotations: dict = field(default_factory=dict)  # added to every trainer pod (e.g. prometheus.io/scrape)
    pod_defaults: dict = field(default_factory=dict)  # api.PodTemplate dict: trainer pod defaults (chart trainerPods)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    handled: set = field(default_factory=set)  # (ns, run, uid) of finished runs whose webhook step is done


# --- one reconciliation ---------------------------------------------------------------------------------


def default_suite(run_name: str) -> str:
    """The suite of a run without spec.suite: its name without a trailing date or counter."""
    base = re.sub(r"(-\d{8}(-?\d{4,6})?|-\d+)$", "", run_name)
    return base or run_name


def list_workloads(api: Api, ns: str) -> list[dict]:
    """Kueue's Workloads in `ns` (which flavor admitted each Job); none when Kueue is absent or forbidden."""
    try:
        r = api.custom.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, ns, "workloads", _preload_content=False
        )
        return json.loads(r.data or b"{}").get("items") or []
    except Exception as e:  # noqa: BLE001 - 404 (no Kueue), 403: the report just names no flavor
        log.debug("cannot list Kueue workloads: %s", getattr(e, "reason", e))
        return []


def list_nodes(api: Api) -> list[dict] | None:
    """The cluster's nodes; None when the operator may not list them (its RBAC lacks nodes get/list: the
    Unschedulable grace period decides then) or the API fails."""
    try:
        r = api.core.list_node(_preload_content=False)
        return json.loads(r.data or b"{}").get("items") or []
    except Exception as e:  # noqa: BLE001 - 403 Forbidden, or any API trouble: degrade, never fail the tick
        log.debug("cannot list nodes: %s", getattr(e, "reason", e))
        return None


def observe(api: Api, body: dict, config: Config, jobsets: bool = False) -> reconcile.Observed:
    """What the run has in the cluster, its results ConfigMap included. `jobsets`: the run asks for JobSets (spec.multiNode.engine JobSet), so
    ask discovery whether they are served and list the run's JobSets; their child Jobs carry the run's labels
    (from the replicated Job's template) and are listed with the plain Jobs."""
    ns, run_name = body["metadata"]["namespace"], body["metadata"]["name"]
    sel = K.run_selector(run_name)
    jobs = {j["metadata"]["name"]: j for j in api.list_jobs(ns, sel)}
    jobset_api = (
        api.served(K.JOBSET_GROUP, K.JOBSET_VERSION, K.JOBSET_PLURAL, config.discovery_ttl) if jobsets else None
    )
    jobset_objs = {j["metadata"]["name"]: j for j in api.list_jobsets(ns, sel)} if jobset_api else {}
    pods: dict[str, list[dict]] = {}
    for pod in api.list_pods(ns, sel):
        owner = next((o["name"] for o in pod["metadata"].get("ownerReferences") or [] if o.get("kind") == "Job"), None)
        owner = owner or (pod["metadata"].get("labels") or {}).get("job-name")
        if owner in jobs:
            pods.setdefault(owner, []).append(pod)
    for name, group in pods.items():  # rank 0 first, then newest first (a retried pod replaces its predecessor)
        group.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        group.sort(key=lambda p: not K.is_rank0(p))
        pods[name] = group
    observed = reconcile.Observed(jobs=jobs, pods=pods, jobsets=jobset_objs, jobset_api=jobset_api)
    if any(failures.unschedulable(p) for group in pods.values() for p in group):
        observed.nodes = list_nodes(api)  # only when a pod waits for a node: can any node ever run it?
    observed.results = observe_results(api, ns, body, observed.written)
    queue = (body.get("spec") or {}).get("queueName")
    if queue:  # hostile input (issue 19): a missing Kueue queue is said, not waited on silently
        observed.queue_missing = queue_problem(api, ns, queue, config.discovery_ttl)
    for name, group in pods.items():
        rank0 = group[0]
        case_id = (rank0["metadata"].get("labels") or {}).get(K.L_CASE) or ""
        case_id = (jobs[name]["metadata"].get("labels") or {}).get(K.L_CASE, case_id)
        term = failures.terminated(rank0)
        if term is None and (rank0.get("status") or {}).get("phase") == "Running":
            url = K.metrics_url(rank0)
            if url:
                try:
                    observed.progress[case_id] = collect.scrape(url, timeout=config.scrape_timeout)
                except collect.ScrapeError as e:
                    log.debug("%s", e)
        elif term is not None and term.get("exitCode") not in (0, None):
            observed.logs[name] = api.pod_log(ns, rank0["metadata"]["name"], config.log_lines)
    return observed


KUEUE_GROUP, KUEUE_VERSION, KUEUE_LOCALQUEUES = "kueue.x-k8s.io", "v1beta1", "localqueues"


def queue_problem(api: Api, ns: str, queue: str, ttl: float) -> str | None:
    """Why the LocalQueue a run names cannot admit its Jobs (they wait suspended for Kueue): Kueue not installed,
    or no LocalQueue of that name in the namespace. None when it exists or that cannot be told (discovery failed,
    the operator may not read LocalQueues)."""
    served = api.served(KUEUE_GROUP, KUEUE_VERSION, KUEUE_LOCALQUEUES, ttl)
    if served is None:
        return None
    if not served:
        return f"Kueue is not installed (no {KUEUE_GROUP} LocalQueues): the Jobs of queue {queue} stay suspended"
    try:
        found = api.read_custom(KUEUE_GROUP, KUEUE_VERSION, KUEUE_LOCALQUEUES, ns, queue)
    except Exception as e:  # noqa: BLE001 - 403 and other API trouble: not known, never fail the tick
        log.debug("cannot read LocalQueue %s/%s: %s", ns, queue, getattr(e, "reason", e))
        return None
    if found is None:
        return f"Kueue LocalQueue {queue} not found in namespace {ns}: the run's Jobs stay suspended until it exists"
    return None


# the suite's history, acks and accepts on the cluster (<suite>-history, <suite>-acks): controller/suite.py
suite_acks, suite_inputs = S.suite_acks, S.suite_inputs


def suspected_cases(api: Api, spec, ns: str, name: str, suite: str, cases, units, status, observed, now):
    """Cases whose regression against the baseline is suspected once every unit has ended (results/verdict.py):
    the operator re-runs them `spec.confirm` times before it writes the results. Returns (their ids, {case id:
    the baseline's image, to run alternating with the re-runs}, {case id: why not}) (baseline.baseline_images)."""
    outs = reconcile.outcomes(units, status, observed, run=name, spec=spec)
    doc = R.build_results(name, suite, spec, cases, group_outcomes(units, outs), status.get("startedAt"), now, {})
    base, _, _ = suite_inputs(api, spec, ns, name, suite, doc.get("started_at"))
    if base is None:
        return [], {}, {}
    suspects = [c["id"] for c in V.suspected(V.apply(doc, base, confirm=spec.confirm))]
    return suspects, *B.baseline_images(base, doc, suspects)


def write_results(
    api: Api, body: dict, doc: dict, spec, ns: str, suite: str, written: dict | None = None
) -> finalize.Finished:
    """Finish a results document (report.finalize, with the suite's baseline and history from the cluster)
    and write the `<run>-report` and then the `<run>-results` ConfigMap: the results ConfigMap existing is
    what says the run is written (the reconciler observes it). A name held by an object this run does not own
    is never overwritten: the run's own ConfigMap gets reconcile.own_configmap_name instead, and `written`
    (when given) receives the names used and why ("results", "report", "foreign": messages)."""
    name = body["metadata"]["name"]
    written = {} if written is None else written
    report_name, why = configmap_name(api, ns, body, K.report_configmap_name(name))
    results_name, why2 = configmap_name(api, ns, body, K.results_configmap_name(name))
    written.update(results=results_name, report=report_name, foreign=[w for w in (why2, why) if w])
    base, history, acks = suite_inputs(api, spec, ns, name, suite, doc.get("started_at"))
    # the confirming re-runs (if any) are in the document: their verdicts are final (confirm=0); where the
    # baseline's image ran beside them, they are judged against those runs (the same window of the cluster)
    base = B.same_window(base, doc)
    done = finalize.finalize(doc, baseline=base, history=history, acks=acks)
    # the suite's history before the results ConfigMap (which says "written"): a retried finish replaces its entry
    S.record_history(api, body, suite, doc, fallback=history)
    results_text = R.configmap_text(doc)  # trimmed to fit when the run is very large (says what it dropped)
    report_text = fit_report(done.report, json.loads(results_text).get(R.TRIM_NOTE_KEY), name)
    report_cm = K.build_configmap(body, report_name, {R.REPORT_KEY: report_text}, namespace=ns, suite=suite)
    write_owned(api, body, report_cm)
    drop_partial(api, ns, report_name)
    data = {R.CONFIGMAP_KEY: results_text}
    write_owned(api, body, K.build_configmap(body, results_name, data, namespace=ns, suite=suite))
    return done


def configmap_name(api: Api, ns: str, body: dict, name: str) -> tuple[str, str | None]:
    """The name this run's ConfigMap `name` goes under: `name`, unless an object this run does not own holds it
    (a user's ConfigMap, another run's): then reconcile.own_configmap_name, with a message saying so."""
    own, why, _ = _configmap_slot(api, ns, body, name)
    return own, why


def _configmap_slot(api: Api, ns: str, body: dict, name: str) -> tuple[str, str | None, dict | None]:
    """configmap_name, and the run's own ConfigMap under `name` when it is there (saves reading it again)."""
    existing = api.read_configmap(ns, name)
    if not existing or _owned(existing, body):
        return name, None, existing
    own = reconcile.own_configmap_name(name, body["metadata"].get("uid") or "")
    owners = [f"{o.get('kind')}/{o.get('name')}" for o in existing["metadata"].get("ownerReferences") or []]
    why = f"configmap/{name} exists and belongs to {', '.join(owners) or 'no BenchmarkRun'}: not overwritten; "
    return own, why + f"this run's is configmap/{own}", None


class NotOwnedError(RuntimeError):
    """An object of the name this run writes exists and belongs to something else: it is never overwritten."""


def write_owned(api: Api, body: dict, cm: dict) -> None:
    """Create or update a ConfigMap of this run, never one this run does not own (ownerReferences): a ConfigMap
    of that name that belongs to another object (a user's, another run's) raises NotOwnedError."""
    meta = cm["metadata"]
    existing = api.read_configmap(meta["namespace"], meta["name"])
    if existing and not _owned(existing, body):
        owners = [f"{o.get('kind')}/{o.get('name')}" for o in existing["metadata"].get("ownerReferences") or []]
        raise NotOwnedError(
            f"configmap/{meta['name']} exists and belongs to {', '.join(owners) or 'no BenchmarkRun'}: not overwritten"
        )
    api.apply_configmap(cm)


def fit_report(
    report: str, trimmed: list[str] | None, run_name: str, limit: int = K.CONFIGMAP_VALUE_LIMIT_BYTES
) -> str:
    """report.md for the report ConfigMap: says what results.json dropped to fit, and is itself cut to fit."""
    if trimmed:
        report += (
            f"\n\n> **Note:** `results.json` in configmap/{K.results_configmap_name(run_name)} was trimmed to fit "
            f"the ConfigMap size limit ({K.CONFIGMAP_LIMIT_BYTES // 1024} KiB): " + "; ".join(trimmed) + ".\n"
        )
    if len(report.encode()) > limit:
        note = "\n\n> **Note:** this report was cut here to fit the ConfigMap size limit.\n"
        report = report.encode()[: limit - len(note.encode()) - 4].decode("utf-8", errors="ignore") + note
    return report


PARTIAL_KEY = "partial-results.json"  # in <run>-report while the run is suspended: the results of what finished


def drop_partial(api: Api, ns: str, name: str) -> None:
    """The final report replaces a suspended run's partial one: its partial results go too."""
    cm = api.read_configmap(ns, name)
    if cm and PARTIAL_KEY in (cm.get("data") or {}):
        api.core.patch_namespaced_config_map(name, ns, {"data": {PARTIAL_KEY: None}}, _preload_content=False)


def write_partial_report(api: Api, body: dict, doc: dict, spec, ns: str, suite: str) -> None:
    """A suspended run's report of what has finished so far: `<run>-report` with report.md and the partial
    results (partial-results.json); the `<run>-results` ConfigMap is written only when every case has ended."""
    name = body["metadata"]["name"]
    base, history, acks = suite_inputs(api, spec, ns, name, suite, doc.get("started_at"))
    done = finalize.finalize(doc, baseline=base, history=history, acks=acks)
    data = {R.REPORT_KEY: done.report, PARTIAL_KEY: R.configmap_text(doc)}
    report_name, _ = configmap_name(api, ns, body, K.report_configmap_name(name))
    write_owned(api, body, K.build_configmap(body, report_name, data, namespace=ns, suite=suite))


def observe_results(api: Api, ns: str, body: dict, written: dict | None = None) -> dict | None:
    """The results document in the run's own results ConfigMap; None when there is none. When the ConfigMap
    of that name belongs to another object (a user's, a deleted run's namesake), the run's own is the one
    under reconcile.own_configmap_name. `written` (when given and the results are there) receives the names
    of the run's results and report ConfigMaps and why they are not the usual ones (write_results)."""
    name = body["metadata"]["name"]
    results_name, why, cm = _configmap_slot(api, ns, body, K.results_configmap_name(name))
    if why:  # the usual name is taken: the run's own is under the other
        cm = api.read_configmap(ns, results_name)
    if not cm or not _owned(cm, body):
        return None
    text = (cm.get("data") or {}).get(R.CONFIGMAP_KEY)
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        return None
    if doc is not None and written is not None:
        report_name, why_report = configmap_name(api, ns, body, K.report_configmap_name(name))
        written.update(results=results_name, report=report_name, foreign=[w for w in (why, why_report) if w])
    return doc


def _owned(obj: dict, body: dict) -> bool:
    uid = body["metadata"].get("uid")
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or []) if uid else True


def notify_once(api: Api, ns: str, body: dict, status: dict, config: Config) -> None:
    """The webhook of a finished run, sent once: only from a status that records the results (so never
    before that status is written), and recorded on the results ConfigMap (annotation), so neither the next
    tick nor a restarted operator sends it again. Also re-exports the results after a restart."""
    name = body["metadata"]["name"]
    suite = (body.get("spec") or {}).get("suite") or default_suite(name)
    key = (ns, name, body["metadata"].get("uid"))
    if key in config.handled and config.metrics.has_results(ns, name):
        config.metrics.update(ns, name, suite, status)
        return
    cm = api.read_configmap(ns, status["resultsConfigMap"])
    if not cm or not _owned(cm, body):
        config.metrics.update(ns, name, suite, status)
        return
    text = (cm.get("data") or {}).get(R.CONFIGMAP_KEY)
    doc = json.loads(text) if text else None
    config.metrics.update(ns, name, suite, status, doc)
    sent = A_WEBHOOK in (cm["metadata"].get("annotations") or {})
    # spec.publish: commit the report to git once, before the webhook that links to it (controller/publish.py)
    link = publish.publish_once(api, ns, body, cm, doc)
    # notify_run: only when TRAINBENCH_WEBHOOK_URL is set, only for regressions or failures; never raises
    if doc is not None and not sent and webhook.notify_run(doc, namespace=ns, link=link):
        api.annotate_configmap(ns, status["resultsConfigMap"], {A_WEBHOOK: iso(now())})
    config.handled.add(key)


def read_run(api: Api, body: dict) -> dict | None:
    """The run as the API server has it now (not the watch's copy, which may lag behind our own last status
    write); None when it is gone or is another object of the same name."""
    meta = body["metadata"]
    fresh = api.read_custom(GROUP, VERSION, PLURAL, meta["namespace"], meta["name"])
    if fresh is None or (meta.get("uid") and fresh["metadata"].get("uid") != meta.get("uid")):
        return None
    return fresh


def release_jobs(
    api: Api,
    ns: str,
    run_name: str,
    jobs: dict | None = None,
    jobsets: dict | None = None,
    stop: bool = True,
    cases: list[dict] | None = None,
) -> None:
    """The run's results are in their ConfigMap: take the result finalizer off its Jobs and JobSets, and
    (`stop`) delete those that have not finished (a pod still waiting for a node or an image: every case
    has ended, so they only hold a slot). One whose case succeeded is kept: its rank 0 has finished and the
    other nodes are finishing too (a JobSet is marked Completed only after all its Jobs are)."""
    sel = K.run_selector(run_name)
    succeeded = {c[k] for c in cases or [] if c.get("phase") == "Succeeded" for k in ("job", "jobSet") if c.get(k)}
    jobs = {j["metadata"]["name"]: j for j in api.list_jobs(ns, sel)} if jobs is None else jobs
    if jobsets is None:
        try:
            jobsets = {j["metadata"]["name"]: j for j in api.list_jobsets(ns, sel)}
        except api.client.ApiException as e:  # 404: the cluster does not serve JobSets
            if e.status != 404:
                raise
            jobsets = {}
    for kind, objs in (("Job", jobs), ("JobSet", jobsets)):
        for name, obj in objs.items():
            if reconcile.RESULT_FINALIZER in (obj["metadata"].get("finalizers") or []):
                api.remove_finalizer(kind, ns, name, reconcile.RESULT_FINALIZER)
            ended = any(failures.job_condition(obj, c) for c in ("Complete", "Completed", "Failed"))
            if stop and not ended and name not in succeeded and not obj["metadata"].get("deletionTimestamp"):
                (api.delete_job if kind == "Job" else api.delete_jobset)(ns, name)


def _finite(value):
    """A status a real API server accepts: NaN and infinities (which JSON cannot carry) become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def status_patch(old: dict, new: dict) -> dict:
    """The merge patch that turns status `old` into `new` (complete, not a delta): changed keys, and None for
    the keys `new` drops."""
    diff = {k: v for k, v in new.items() if old.get(k) != v}
    for key in old:
        if key not in new and key in ("resultsConfigMap", "reportConfigMap", "completedAt"):
            diff[key] = None
    return diff


RETRIED_STATUS = (409, 429, 500, 502, 503, 504)


def write_status(api: Api, body: dict, old: dict, new: dict, logger, attempts: int = 3) -> bool:
    """Write the run's status through the API (not kopf's patch: a refused kopf patch ends the run's timer for
    good). A conflict or a server error is retried from a fresh read; a refusal (400, 422: what the server
    will not store) keeps the previous status and adds a StatusWriteRefused condition saying why. Returns
    whether `new` was written; False leaves it to the next tick, which recomputes it from a fresh read."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    new = _finite(new)
    for attempt in range(attempts):
        diff = status_patch(old, new)
        if not diff:
            return True
        try:
            api.patch_custom_status(GROUP, VERSION, PLURAL, ns, name, diff)
            return True
        except api.client.ApiException as e:
            code = e.status or 0
            if code == 404:
                return False
            if code in RETRIED_STATUS or code >= 500:
                logger.warning("status write refused (%s %s), retried from a fresh read", code, e.reason)
                fresh = read_run(api, body) if attempt + 1 < attempts else None
                if fresh is None:
                    return False
                old = dict(fresh.get("status") or {})
                continue
            why = f"the API server refused the status ({code}): {api_message(e)}"[:1000]
            logger.warning("%s", why)
            cond = reconcile.condition(
                old.get("conditions") or [], "StatusWriteRefused", True, "Refused", why,
                int(meta.get("generation") or 1), iso(now()),
            )  # fmt: skip
            others = [c for c in old.get("conditions") or [] if c.get("type") != "StatusWriteRefused"]
            try:
                api.patch_custom_status(GROUP, VERSION, PLURAL, ns, name, {"conditions": [*others, cond]})
            except Exception as e2:  # noqa: BLE001 - the next tick tries again
                logger.warning("could not record the refusal either: %s", e2)
            return False
    return False


def reconcile_run(body: dict, patch, logger, config: Config, api: Api) -> None:
    body = read_run(api, body)  # the watch's copy may predate our last status write: never act on it
    if body is None:
        return
    meta, ns = body["metadata"], body["metadata"]["namespace"]
    name = meta["name"]
    generation = int(meta.get("generation") or 1)
    status = dict(body.get("status") or {})
    t = now()
    suite_hint = (body.get("spec") or {}).get("suite") or default_suite(name)

    done = status.get("phase") in reconcile.TERMINAL_RUN_PHASES and status.get("observedGeneration") == generation
    if done and status.get("resultsConfigMap"):
        if (ns, name, meta.get("uid")) not in config.handled:  # once per process: a restart between the
            release_jobs(api, ns, name, cases=status.get("cases"))  # results and the release is caught up here
        notify_once(api, ns, body, status, config)
        # accept/ack annotations, and acks written since the finish leave the change-point gauge (suite.py)
        for type_, reason, message in S.tend_finished(api, body, suite_hint, config.metrics):
            kopf.event(body, type=type_, reason=reason, message=message)
            logger.info("%s: %s", reason, message)
        return
    if done and not status.get("total"):
        config.metrics.update(ns, name, suite_hint, status)
        return

    try:
        spec = parse_spec(body.get("spec"))
        cases = plan(spec)
        # what runs: every case `repeats` times, interleaved, then the confirming re-runs of suspected regressions
        units = with_repeats(
            cases, spec.repeats, confirm=status.get("confirm"), baseline_images=status.get("confirmBaseline")
        )
    except SpecError as e:
        new = reconcile.invalid_status(status, generation, e.field, e.message, t)
        if status.get("observedGeneration") != generation or status.get("phase") != "Failed":
            kopf.warn(body, reason="InvalidSpec", message=f"{e.field}: {e.message}")
            logger.warning("invalid spec: %s: %s", e.field, e.message)
        write_status(api, body, status, new, logger)
        config.metrics.update(ns, name, suite_hint, new)
        return

    suite = spec.suite or default_suite(name)
    wants_jobsets = any(K.engine(c, spec.multi_node.engine) == K.ENGINE_JOBSET for c in cases)
    observed = observe(api, body, config, jobsets=wants_jobsets)
    out = reconcile.reconcile(
        body,
        spec,
        units,
        observed,
        now=t,
        namespace=ns,
        suite=suite,
        unschedulable_grace_s=config.unschedulable_grace_s,
        image_pull_grace_s=config.image_pull_grace_s,
        pod_annotations=config.pod_annotations,
        pod_defaults=config.pod_defaults,
    )
    new = out.status
    # launch: the create is the only launch path and the Job's name is the case's; a 409 means it exists
    # (launched before a restart, or a create that timed out after it succeeded): that is success. A refusal
    # (a 4xx: invalid, denied by an admission policy) ends the case with the server's message; anything else
    # (5xx, a timeout) takes the launch back and the next tick retries it
    refused: dict[str, str] = {}
    for case_id, objs in out.launches.items():
        obj = objs[0]
        try:
            for obj in objs:
                if api.create(obj):
                    logger.info("created %s %s", obj["kind"], obj["metadata"]["name"])
        except Exception as e:  # noqa: BLE001 - not launched: the status must not say it was
            why, code = api_message(e), getattr(e, "status", None)
            if isinstance(e, api.client.ApiException) and reconcile.is_refusal(code, why):
                what = f"{obj['kind']} {obj['metadata']['name']}"
                refused[case_id] = f"the API server refused {what} ({code} {e.reason}): {why}"
                logger.warning("case %s: %s", case_id, refused[case_id])
                continue
            logger.warning("case %s: launch failed, retried next tick: %s", case_id, why)
            reconcile.unlaunch(new, case_id, why)
            out.events = [ev for ev in out.events if not (ev[1] == "CaseLaunched" and f"case {case_id}:" in ev[2])]
    if refused:  # those cases end now (never relaunched), and the run's counts and conditions say so
        reconcile.refuse(out, body, spec, observed, refused, t)
        new = out.status
    if status.get("confirm") is not None:  # decided once; the reconciler's status does not carry it
        new["confirm"] = status["confirm"]
        if status.get("confirmBaseline") is not None:
            new["confirmBaseline"] = status["confirmBaseline"]
    elif out.write_results and spec.confirm > 0 and not spec.cancel:
        suspects, images, why_not = suspected_cases(api, spec, ns, name, suite, cases, units, new, observed, t)
        new["confirm"] = dict.fromkeys(suspects, spec.confirm)
        new["confirmBaseline"] = images
        if suspects:  # re-run them (next ticks launch the units) before the results are written
            out.write_results = False
            new["phase"] = "Running"
            new["message"] = f"regression suspected in {len(suspects)} case(s): {spec.confirm} re-run(s) each"
            for cid in suspects:
                how = (
                    f", alternating with {spec.confirm} run(s) of its baseline's image {images[cid]}"
                    if cid in images
                    else f" ({why_not.get(cid, 'no baseline image')}: compared with the stored baseline)"
                )
                out.events.append(
                    ("Warning", "RegressionSuspected", f"case {cid}: re-run {spec.confirm}x to confirm{how}")
                )
    doc = observed.results
    if out.write_results or out.write_partial:
        if spec.queue_name:
            observed.flavors = reconcile.kueue_flavors(list_workloads(api, ns))
        outs = reconcile.outcomes(units, new, observed, run=name, spec=spec)
        doc = R.build_results(
            run=name,
            suite=suite,
            spec=spec,
            cases=cases,
            outcomes=group_outcomes(units, outs),
            started_at=new.get("startedAt"),
            finished_at=t,
            environment=reconcile.run_environment(
                ns, {u.id: outs[u.id] for u in units if u.id in outs and not u.baseline}
            ),
        )
    if out.write_partial:  # suspended: a report of what finished, the results ConfigMap stays unwritten
        try:
            write_partial_report(api, body, doc, spec, ns, suite)
        except Exception as e:  # noqa: BLE001 - a partial report is a courtesy; the final one still comes
            logger.warning("writing the partial report failed: %s", api_message(e))
        doc = observed.results
    elif out.write_results:
        try:
            write_results(api, body, doc, spec, ns, suite, observed.written)
        except Exception as e:  # noqa: BLE001 - the status says the results are not written; next tick again
            logger.warning("writing the results failed, retried next tick: %s", api_message(e))
            doc = None
        else:
            new = reconcile.finished_status(status, new, name, generation, doc, t, observed.written)
            where = f"results in configmap/{new['resultsConfigMap']}, report in configmap/{new['reportConfigMap']}"
            out.events.append(("Normal", "ResultsWritten", where))
            for why in observed.written.get("foreign") or []:  # a name held by another object: not overwritten
                out.events.append(("Warning", "ConfigMapNotOwned", why))
            for c in doc.get("cases") or []:
                state = (c.get("verdict") or {}).get("state")
                if state in ("confirmed", "cleared") and (new.get("confirm") or {}).get(c["id"]):
                    reason = "RegressionConfirmed" if state == "confirmed" else "RegressionCleared"
                    note = (c.get("baseline") or {}).get("note")  # against the baseline's image, or why not
                    msg = f"case {c['id']}" + (f" ({note})" if note else "")
                    out.events.append(("Warning" if state == "confirmed" else "Normal", reason, msg))
    written = write_status(api, body, status, new, logger)
    if written:
        for type_, reason, message in out.events:
            kopf.event(body, type=type_, reason=reason, message=message)
            logger.info("%s: %s", reason, message)
    # only cases that the status had already recorded as ended are in delete_*: their Jobs may go now
    for job in out.delete_jobs:
        api.remove_finalizer("Job", ns, job, reconcile.RESULT_FINALIZER)
        api.delete_job(ns, job)
    for jobset in out.delete_jobsets:
        api.remove_finalizer("JobSet", ns, jobset, reconcile.RESULT_FINALIZER)
        api.delete_jobset(ns, jobset)
    if doc is not None and written:  # the results are in their ConfigMap: the Jobs need not be kept for them
        release_jobs(api, ns, name, observed.jobs, observed.jobsets, cases=new.get("cases"))
    config.metrics.update(ns, name, suite, new, doc)


def register(registry: kopf.OperatorRegistry, config: Config) -> None:
    """Attach the handlers to `registry`; `config` carries the settings from the command line."""
    state: dict[str, Api] = {}

    def api() -> Api:
        if "api" not in state:
            state["api"] = Api()
        return state["api"]

    @kopf.on.login(registry=registry)
    def _login(**kwargs):
        return kopf.login_via_client(**kwargs)  # in-cluster service account, else KUBECONFIG

    @kopf.on.startup(registry=registry)
    def _configure(settings: kopf.OperatorSettings, **_):
        settings.persistence.finalizer = "trainbench.dev/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="trainbench.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="trainbench.dev", key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's only on trouble
        settings.watching.server_timeout = config.watch_server_timeout
        settings.watching.client_timeout = config.watch_client_timeout
        connect_s, read_s = request_timeout()  # kopf's own calls (events, its annotations) time out too
        settings.networking.connect_timeout = connect_s
        settings.networking.request_timeout = connect_s + read_s
        settings.execution.max_workers = 8

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, interval=config.interval, id="reconcile")
    def _tick(body, patch, logger, **_):
        # Never raises: an exception (or a patch kopf fails to apply) can end a kopf timer for good. Every
        # step reads fresh state, so the next tick retries whatever this one could not finish.
        try:
            reconcile_run(dict(body), patch, logger, config, api())
        except Exception as e:  # noqa: BLE001 - an API error, a timeout: one line, retried next tick
            logger.warning(
                "reconcile failed, retried in %gs: %s: %s", config.interval, type(e).__name__, api_message(e)
            )

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=True, id="forget")
    def _forget(body, logger, **_):
        config.metrics.forget(body["metadata"]["namespace"], body["metadata"]["name"])
        try:  # the run is gone: its Jobs go with it (owner references), not held for results any more
            release_jobs(api(), body["metadata"]["namespace"], body["metadata"]["name"], stop=False)
        except Exception as e:  # noqa: BLE001
            logger.warning("releasing the Jobs of a deleted run failed: %s", api_message(e))
