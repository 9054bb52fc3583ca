"""The kopf handlers: thin I/O around the pure `reconcile` module.

One timer per BenchmarkRun recomputes everything from what is in the cluster (level-based): list the
run's Jobs (and JobSets, for a run with multiNode.engine JobSet, after asking discovery whether the cluster
serves them) and Pods, scrape the running rank-0 pods, read termination messages and logs of pods that
ended, then create the Jobs the pools have room for, write the status and post an Event per transition.
When every case has ended it writes the `<run>-results` and `<run>-report` ConfigMaps. A spec that
cannot run gets phase Failed, a SpecValid=False condition and a Warning Event naming the field; other
runs are unaffected (each run is its own timer, and nothing here raises for one run's bad input).

`register(registry, config)` attaches the handlers to a kopf registry; `runner.py` runs kopf with it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import kopf

from trainbench.operator import collect, failures, reconcile
from trainbench.operator import kube as K
from trainbench.operator.api import GROUP, PLURAL, VERSION, SpecError, parse_spec
from trainbench.operator.metrics import OperatorMetrics
from trainbench.operator.plan import plan

log = logging.getLogger("trainbench.operator")


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
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)


# --- the Kubernetes API, as plain dicts -----------------------------------------------------------------


class Api:
    """The few API calls the operator makes (kubernetes client; JSON dicts in and out)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.client = client
        self.core = client.CoreV1Api()
        self.batch = client.BatchV1Api()
        self.custom = client.CustomObjectsApi()
        self._served: dict[tuple[str, str, str], tuple[float, bool]] = {}

    def served(self, group: str, version: str, plural: str, ttl: float = 60.0) -> bool | None:
        """Whether the cluster serves `plural` in `group/version` (discovery; the answer is kept `ttl` seconds,
        so a JobSet installed later is found). None when discovery itself failed (ask again next time)."""
        key = (group, version, plural)
        cached = self._served.get(key)
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1]
        try:
            r = self.custom.get_api_resources(group, version, _preload_content=False)
            found = any(res.get("name") == plural for res in self._json(r).get("resources") or [])
        except self.client.ApiException as e:
            if e.status != 404:
                log.warning("discovery of %s/%s failed: %s", group, version, e.reason)
                return None
            found = False
        self._served[key] = (time.monotonic(), found)
        return found

    def list_jobsets(self, ns: str, selector: str) -> list[dict]:
        r = self.custom.list_namespaced_custom_object(
            K.JOBSET_GROUP, K.JOBSET_VERSION, ns, K.JOBSET_PLURAL, label_selector=selector, _preload_content=False
        )
        return self._json(r).get("items") or []

    @staticmethod
    def _json(resp) -> dict:
        return json.loads(resp.data or b"{}")

    def list_jobs(self, ns: str, selector: str) -> list[dict]:
        r = self.batch.list_namespaced_job(ns, label_selector=selector, _preload_content=False)
        return self._json(r).get("items") or []

    def list_pods(self, ns: str, selector: str) -> list[dict]:
        r = self.core.list_namespaced_pod(ns, label_selector=selector, _preload_content=False)
        return self._json(r).get("items") or []

    def list_configmaps(self, ns: str, selector: str) -> list[dict]:
        r = self.core.list_namespaced_config_map(ns, label_selector=selector, _preload_content=False)
        return self._json(r).get("items") or []

    def read_configmap(self, ns: str, name: str) -> dict | None:
        try:
            return self._json(self.core.read_namespaced_config_map(name, ns, _preload_content=False))
        except self.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def pod_log(self, ns: str, name: str, lines: int) -> str:
        try:
            r = self.core.read_namespaced_pod_log(
                name, ns, container=K.CONTAINER, tail_lines=lines, _preload_content=False
            )
            return (r.data or b"").decode("utf-8", errors="replace")
        except self.client.ApiException as e:
            log.info("no log for pod %s/%s: %s", ns, name, e.reason)
            return ""

    def create(self, obj: dict) -> bool:
        """Create an object; False if it already exists (a restarted operator re-creating is harmless)."""
        ns = obj["metadata"]["namespace"]
        try:
            if obj["kind"] == "Job":
                self.batch.create_namespaced_job(ns, obj, _preload_content=False)
            elif obj["kind"] == "Service":
                self.core.create_namespaced_service(ns, obj, _preload_content=False)
            elif obj["kind"] == "ConfigMap":
                self.core.create_namespaced_config_map(ns, obj, _preload_content=False)
            elif obj["kind"] == "JobSet":
                self.custom.create_namespaced_custom_object(
                    K.JOBSET_GROUP, K.JOBSET_VERSION, ns, K.JOBSET_PLURAL, obj, _preload_content=False
                )
            else:  # pragma: no cover - builders only make these
                raise ValueError(obj["kind"])
        except self.client.ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def apply_configmap(self, obj: dict) -> None:
        if not self.create(obj):
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            self.core.patch_namespaced_config_map(name, ns, {"data": obj["data"]}, _preload_content=False)

    def delete_job(self, ns: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, ns, propagation_policy="Background", _preload_content=False)
        except self.client.ApiException as e:
            if e.status != 404:
                raise

    def delete_jobset(self, ns: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                K.JOBSET_GROUP,
                K.JOBSET_VERSION,
                ns,
                K.JOBSET_PLURAL,
                name,
                propagation_policy="Background",
                _preload_content=False,
            )
        except self.client.ApiException as e:
            if e.status != 404:
                raise


# --- one reconciliation ---------------------------------------------------------------------------------


def default_suite(run_name: str) -> str:
    """The suite of a run without spec.suite: its name without a trailing date or counter."""
    base = re.sub(r"(-\d{8}(-?\d{4,6})?|-\d+)$", "", run_name)
    return base or run_name


def observe(api: Api, ns: str, run_name: str, config: Config, jobsets: bool = False) -> reconcile.Observed:
    """What the run has in the cluster. `jobsets`: the run asks for JobSets (spec.multiNode.engine JobSet), so
    ask discovery whether they are served and list the run's JobSets; their child Jobs carry the run's labels
    (from the replicated Job's template) and are listed with the plain Jobs."""
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


def _baseline(api: Api, spec, ns: str, run_name: str, suite: str, started_at: str | None = None):
    """The baseline of a run: a pinned ConfigMap, or the results of the suite's previous run (the newest run
    that had finished before this one started)."""
    from trainbench.operator import baseline as B

    if spec.baseline.source == "none":
        return None
    try:
        if spec.baseline.source == "configMap":
            cm = api.read_configmap(ns, spec.baseline.config_map)
            if not cm:
                return None
            text = (cm.get("data") or {}).get("results.json")
            return B.from_document(json.loads(text), f"configmap/{spec.baseline.config_map}") if text else None
        sel = f"{K.L_SUITE}={K.label_value(suite)},{K.L_COMPONENT}=results"
        started = failures.parse_time(started_at)
        best = None
        for cm in api.list_configmaps(ns, sel):
            text = (cm.get("data") or {}).get("results.json")
            labels = cm["metadata"].get("labels") or {}
            if not text or labels.get(K.L_RUN) == K.label_value(run_name):
                continue
            doc = json.loads(text)
            finished = failures.parse_time(doc.get("finished_at"))
            if finished is None or (started is not None and finished > started):
                continue  # not finished, or ran alongside this run: not its predecessor
            if best is None or finished > failures.parse_time(best.get("finished_at")):
                best = doc
        return B.from_results(best) if best else None
    except Exception as e:  # a broken baseline must not block the results
        log.warning("baseline for %s/%s unavailable: %s", ns, run_name, e)
        return None


CONFIGMAP_LIMIT = 1_000_000  # a ConfigMap holds at most 1 MiB


def results_text(doc: dict) -> str:
    """results.json for the ConfigMap: compact; a very large matrix drops each case's copy of the trainer JSON
    (its numbers are in `metrics` already) and then the per-case environment to stay under 1 MiB."""
    text = json.dumps(doc, separators=(",", ":"))
    for key in ("trainer", "environment"):
        if len(text.encode()) <= CONFIGMAP_LIMIT:
            break
        doc = {**doc, "cases": [{**c, key: None if key == "trainer" else {}} for c in doc["cases"]]}
        text = json.dumps(doc, separators=(",", ":"))
    return text


def write_results(api: Api, body: dict, spec, cases, status: dict, observed, ns: str, suite: str, now: datetime):
    """Build results.json and report.md, write both ConfigMaps; returns the results document."""
    from trainbench.operator import report, results, verdict

    name = body["metadata"]["name"]
    doc = results.build_results(
        run=name,
        suite=suite,
        spec=spec,
        cases=cases,
        outcomes=reconcile.outcomes(cases, status, observed),
        started_at=status.get("startedAt"),
        finished_at=reconcile.now_iso(now),
        environment={"executor": "kubernetes", "namespace": ns},
    )
    base = _baseline(api, spec, ns, name, suite, status.get("startedAt"))
    verdict.apply(doc, base, spec.thresholds)
    md = report.render_report(doc, base, thresholds=spec.thresholds)
    cm_results = K.results_configmap_name(name)
    cm_report = K.report_configmap_name(name)
    api.apply_configmap(
        K.build_configmap(body, cm_results, {"results.json": results_text(doc)}, namespace=ns, suite=suite)
    )
    api.apply_configmap(K.build_configmap(body, cm_report, {"report.md": md}, namespace=ns, suite=suite))
    return doc


def reconcile_run(body: dict, patch, logger, config: Config, api: Api) -> None:
    meta, ns = body["metadata"], body["metadata"]["namespace"]
    name = meta["name"]
    generation = int(meta.get("generation") or 1)
    status = dict(body.get("status") or {})
    now = datetime.now(timezone.utc)
    suite_hint = (body.get("spec") or {}).get("suite") or default_suite(name)

    done = status.get("phase") in reconcile.TERMINAL_RUN_PHASES and status.get("observedGeneration") == generation
    if done and (status.get("resultsConfigMap") or not status.get("total")):
        if status.get("resultsConfigMap") and not config.metrics.has_results(ns, name):
            cm = api.read_configmap(ns, status["resultsConfigMap"])  # after a restart: re-export the results
            text = ((cm or {}).get("data") or {}).get("results.json")
            config.metrics.update(ns, name, suite_hint, status, json.loads(text) if text else None)
        else:
            config.metrics.update(ns, name, suite_hint, status)
        return

    try:
        spec = parse_spec(body.get("spec"))
        cases = plan(spec)
    except SpecError as e:
        new = reconcile.invalid_status(status, generation, e.field, e.message, now)
        if status.get("observedGeneration") != generation or status.get("phase") != "Failed":
            kopf.warn(body, reason="InvalidSpec", message=f"{e.field}: {e.message}")
            logger.warning("invalid spec: %s: %s", e.field, e.message)
        _set_status(patch, status, new)
        config.metrics.update(ns, name, suite_hint, new)
        return

    suite = spec.suite or default_suite(name)
    wants_jobsets = any(K.engine(c, spec.multi_node.engine) == K.ENGINE_JOBSET for c in cases)
    observed = observe(api, ns, name, config, jobsets=wants_jobsets)
    out = reconcile.reconcile(
        body,
        spec,
        cases,
        observed,
        now=now,
        namespace=ns,
        suite=suite,
        unschedulable_grace_s=config.unschedulable_grace_s,
        image_pull_grace_s=config.image_pull_grace_s,
        pod_annotations=config.pod_annotations,
    )
    for obj in out.create:
        if api.create(obj):
            logger.info("created %s %s", obj["kind"], obj["metadata"]["name"])
    for job in out.delete_jobs:
        api.delete_job(ns, job)
    for jobset in out.delete_jobsets:
        api.delete_jobset(ns, jobset)
    new = out.status
    doc = None
    if out.all_ended and not status.get("resultsConfigMap"):
        doc = write_results(api, body, spec, cases, new, observed, ns, suite, now)
        from trainbench.operator import verdict

        regressions = verdict.regressions(doc)
        new["resultsConfigMap"] = K.results_configmap_name(name)
        new["reportConfigMap"] = K.report_configmap_name(name)
        new["completedAt"] = reconcile.now_iso(now)
        new["regressions"] = len(regressions)
        ready = reconcile._condition(
            status.get("conditions") or [],
            "Ready",
            True,
            "ResultsWritten",
            f"results in configmap/{new['resultsConfigMap']}, report in configmap/{new['reportConfigMap']}",
            generation,
            reconcile.now_iso(now),
        )
        new["conditions"] = (
            [ready]
            + [c for c in new["conditions"] if c["type"] not in ("Ready", "RegressionDetected")]
            + [
                reconcile._condition(
                    status.get("conditions") or [],
                    "RegressionDetected",
                    bool(regressions),
                    "Regressions" if regressions else "NoRegressions",
                    "; ".join(f"{c['id']}: {v.get('metric')} {v.get('change_pct')}%" for c, v in regressions)[:1000]
                    or ("no baseline" if not doc.get("baseline") else "no metric worse than its threshold"),
                    generation,
                    reconcile.now_iso(now),
                )
            ]
        )
        from trainbench.operator import webhook

        webhook.notify_run(doc, namespace=ns)  # only when TRAINBENCH_WEBHOOK_URL is set; never raises
        out.events.append(
            (
                "Normal",
                "ResultsWritten",
                f"results in configmap/{new['resultsConfigMap']}, report in configmap/{new['reportConfigMap']}",
            )  # fmt: skip
        )
    elif out.all_ended:
        pass
    else:  # not all ended: the run is not final yet (a spec edit after completion reopens it)
        for key in ("resultsConfigMap", "reportConfigMap", "completedAt"):
            new.pop(key, None)
    if out.all_ended and not new.get("resultsConfigMap"):
        new["phase"] = "Running"  # final only once the results exist
    for type_, reason, message in out.events:
        kopf.event(body, type=type_, reason=reason, message=message)
        logger.info("%s: %s", reason, message)
    _set_status(patch, status, new)
    config.metrics.update(ns, name, suite, new, doc)


def _set_status(patch, old: dict, new: dict) -> None:
    for key, value in new.items():
        if old.get(key) != value:
            patch.status[key] = value
    for key in old:
        if key not in new and key in ("resultsConfigMap", "reportConfigMap", "completedAt"):
            patch.status[key] = None


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
        settings.execution.max_workers = 8

    @kopf.timer(GROUP, VERSION, PLURAL, registry=registry, interval=config.interval, id="reconcile")
    def _tick(body, patch, logger, **_):
        try:
            reconcile_run(dict(body), patch, logger, config, api())
        except kopf.TemporaryError:
            raise
        except Exception as e:  # one run's trouble must not stop the others; retried next tick
            logger.exception("reconcile failed")
            raise kopf.TemporaryError(f"reconcile failed: {e}", delay=config.interval) from e

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=True, id="forget")
    def _forget(body, **_):
        config.metrics.forget(body["metadata"]["namespace"], body["metadata"]["name"])
