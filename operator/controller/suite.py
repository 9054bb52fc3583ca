"""A suite's own objects on a cluster, beside its runs: its history, its acks, and accepts by annotation.

- `<suite>-history` (kube.history_configmap_name): results/history.py's document under `history.json`. The
  operator appends each run at its finish (`record_history`), keyed by the run's uid, before it writes the run's
  `<run>-results` ConfigMap (what says the run is written): a finish retried after a restart replaces its own
  entry instead of adding the run twice. Owned by no run (labelled with the suite), so deleting runs, by hand
  or by `trainbench submit`'s history limits, or a TTL on the results ConfigMaps never deletes the history the
  baselines pool; `kubectl delete configmap <suite>-history` starts it again (from the results ConfigMaps
  still there). Trimmed oldest-first to fit one ConfigMap (history.trim).
- `<suite>-acks`: the JSON list under `acks.json` of accepted baselines and acknowledged change points
  (results/changepoints.py, results/baseline.from_history). `trainbench baseline accept|ack --suite` and the
  annotations below both write it through `record_ack`, the one place that builds and stores an entry.
- Annotations on a finished BenchmarkRun, which the operator records in the acks (with an Event):
  `trainbench.dev/accept-baseline=<case id>[,<case id>...]|all` accepts the run as the baseline of those cases;
  `trainbench.dev/ack-change-points=<case id>[/<metric>][,...]|all` acknowledges the change points that name
  this run. What was recorded is kept in the annotation `trainbench.dev/acks-recorded`, so each value is
  recorded once, across restarts too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from trainbench.operator import clock
from trainbench.operator import kube as K
from trainbench.operator.api import GROUP, PLURAL, VERSION
from trainbench.operator.clock import parse_time
from trainbench.operator.controller.client import Api, transient
from trainbench.operator.results import baseline as B
from trainbench.operator.results import document as R
from trainbench.operator.results import history as H

log = logging.getLogger("trainbench.operator")

ACKS_KEY = "acks.json"
A_ACCEPT = "trainbench.dev/accept-baseline"
A_ACK = "trainbench.dev/ack-change-points"
A_RECORDED = "trainbench.dev/acks-recorded"  # JSON {annotation: value} already recorded in the acks
ATTEMPTS = 5  # read-modify-write rounds when another writer got there first


class AcksError(ValueError):
    """An acks ConfigMap that cannot be read or written (not a JSON list, not ours)."""


def suite_labels(suite: str, component: str) -> dict:
    return {
        K.L_NAME: "trainbench",
        K.L_MANAGED_BY: K.MANAGER,
        K.L_SUITE: K.label_value(suite),
        K.L_COMPONENT: component,
    }


def _is_ours(cm: dict, component: str) -> bool:
    return ((cm.get("metadata") or {}).get("labels") or {}).get(K.L_COMPONENT) == component


def _store(api: Api, ns: str, name: str, labels: dict, key: str, text: str, old: dict | None) -> bool:
    """Write `text` under `key` of ConfigMap `name`: create it (old None) or replace its data if it is still the
    version read (`old`'s resourceVersion, a JSON patch test). False: someone wrote it in between (read again)."""
    if old is None:
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels}}
        return api.create({**obj, "data": {key: text}})
    rv = (old.get("metadata") or {}).get("resourceVersion")
    data = {**(old.get("data") or {}), key: text}
    body = [{"op": "add", "path": "/data", "value": data}]
    if rv:
        body.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": rv})
    try:
        api.core.patch_namespaced_config_map(
            name, ns, body, _content_type="application/json-patch+json", _preload_content=False
        )
    except api.client.ApiException as e:
        if e.status in (409, 422):  # the version changed under us (a failed test is 422, a conflict 409)
            return False
        raise
    return True


# --- acks -----------------------------------------------------------------------------------------------------


def ack_entry(
    action: str, run: str, case: str | None = None, metric: str | None = None, note: str | None = None
) -> dict:
    """One acks entry: `accept` (the run becomes the baseline of `case`, every case when None: a slowdown is
    meant) or `ack` (the change points of `metric` that name `run` are known)."""
    entry = {"run": run, "case": case or "*", "note": note, "at": clock.iso(clock.now())}
    if action == "accept":
        entry["accept"] = True
    elif action == "ack":
        entry["metric"] = metric or "*"
    else:
        raise ValueError(f"acks: unknown action {action!r} (accept or ack)")
    return entry


def _same_ack(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("run", "case", "metric", "accept"))


def add_entry(acks: list[dict], entry: dict) -> tuple[list[dict], bool]:
    """`acks` with `entry` added; False when an entry of the same run, case, metric and kind is there already."""
    if any(_same_ack(a, entry) for a in acks):
        return acks, False
    return [*acks, entry], True


def parse_acks(text: str | None, where: str) -> list[dict]:
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise AcksError(
            f"{where}: {ACKS_KEY} is not JSON ({' '.join(str(e).split())[:120]}); fix or delete it"
        ) from None
    if not isinstance(doc, list):
        raise AcksError(f"{where}: {ACKS_KEY} is not a JSON list; fix or delete it")
    return [a for a in doc if isinstance(a, dict)]


def suite_acks(api: Api, ns: str, suite: str) -> list[dict]:
    """The suite's acks ([] when there is none; unreadable: [] and a log line, the run's results go on)."""
    name = K.acks_configmap_name(suite)
    try:
        cm = api.read_configmap(ns, name)
        return parse_acks(((cm or {}).get("data") or {}).get(ACKS_KEY), f"configmap/{name}")
    except Exception as e:  # noqa: BLE001 - unreadable acks: nothing acknowledged, said in the log
        if transient(e):  # API trouble of the moment (issue 19): the caller's tick is retried, nothing read
            raise
        log.warning("acks of suite %s in %s unreadable: %s", suite, ns, e)
        return []


def record_ack(api: Api, ns: str, suite: str, entries: list[dict]) -> tuple[list[dict], list[dict]]:
    """Add `entries` to the suite's acks ConfigMap (created when absent; an entry already there is not added
    again). Returns (the entries added, the acks as stored). AcksError for an acks.json that is not a list."""
    name = K.acks_configmap_name(suite)
    for _ in range(ATTEMPTS):
        cm = api.read_configmap(ns, name)
        acks = parse_acks(((cm or {}).get("data") or {}).get(ACKS_KEY), f"configmap/{name} in {ns}")
        added = []
        for entry in entries:
            acks, new = add_entry(acks, entry)
            if new:
                added.append(entry)
        if not added:
            return [], acks
        if _store(api, ns, name, suite_labels(suite, "acks"), ACKS_KEY, json.dumps(acks), cm):
            return added, acks
    raise AcksError(f"configmap/{name} in {ns}: changed by another writer {ATTEMPTS} times in a row; try again")


# --- history --------------------------------------------------------------------------------------------------


@dataclass
class SuiteHistory:
    doc: dict | None  # the runs that had finished before the run started (None: no history at all)
    source: str  # where it came from, for the report: configmap/<suite>-history, or the results ConfigMaps
    problem: str | None = None  # a history ConfigMap that exists and cannot be used (said, never fatal)
    previous: bool = False  # a run of the suite finished before this one (a "previous" baseline exists)


def _from_results_configmaps(api: Api, ns: str, suite: str, run_name: str) -> list[dict]:
    sel = f"{K.L_SUITE}={K.label_value(suite)},{K.L_COMPONENT}=results"
    docs = []
    for cm in api.list_configmaps(ns, sel):
        text = (cm.get("data") or {}).get(R.CONFIGMAP_KEY)
        labels = cm["metadata"].get("labels") or {}
        if not text or labels.get(K.L_RUN) == K.label_value(run_name):
            continue
        try:
            docs.append(json.loads(text))
        except ValueError:
            log.warning(
                "configmap/%s in %s: results.json is not JSON, left out of the history", cm["metadata"]["name"], ns
            )
    return docs


def read_history(api: Api, ns: str, suite: str) -> tuple[dict | None, dict | None, str | None]:
    """(the ConfigMap, its history document, the problem) of `<suite>-history`: (None, None, None) when absent."""
    name = K.history_configmap_name(suite)
    cm = api.read_configmap(ns, name)
    if cm is None:
        return None, None, None
    if not _is_ours(cm, "history"):
        return cm, None, f"configmap/{name} exists but is not a trainbench history (no {K.L_COMPONENT}=history label)"
    doc, problem = H.parse((cm.get("data") or {}).get(H.CONFIGMAP_KEY))
    if doc is None and problem is None:
        problem = f"has no {H.CONFIGMAP_KEY} key"
    if problem:
        return cm, None, f"configmap/{name}: {problem}"
    if doc.get("suite") not in (None, suite):
        return cm, None, f"configmap/{name} holds the history of suite {doc.get('suite')!r}, not {suite!r}"
    return cm, doc, None


def suite_history(
    api: Api, ns: str, suite: str, run_name: str, started_at: str | None, uid: str | None = None
) -> SuiteHistory:
    """The history a run is judged against: `<suite>-history`, else (absent or unusable: said in `problem`) the
    suite's results ConfigMaps; only runs that had finished before this one started, this run left out."""
    name = K.history_configmap_name(suite)
    _, doc, problem = read_history(api, ns, suite)
    if doc is not None:
        before = H.before(doc, started_at, run_name, uid)
        return SuiteHistory(before, f"configmap/{name}", None, bool(before["runs"]))
    started = parse_time(started_at)
    docs = []
    for d in _from_results_configmaps(api, ns, suite, run_name):
        finished = parse_time(d.get("finished_at"))
        if finished is None or (started is not None and finished > started):
            continue  # not finished, or ran alongside this run: not its predecessor
        docs.append(d)
    doc = H.from_results(docs) or (H.empty(suite) if problem else None)  # a problem is said even with no runs
    return SuiteHistory(doc, "results ConfigMaps", problem, bool(docs))


def record_history(api: Api, body: dict, suite: str, results: dict, fallback: dict | None = None) -> str | None:
    """Append a finished run (its final results document) to `<suite>-history`, keyed by the run's uid (a retried
    finish replaces its entry). Absent or garbage: written anew from `fallback` (the history rebuilt from the
    results ConfigMaps) plus this run. A ConfigMap of that name that is not a trainbench history is never
    overwritten. Returns what went wrong, None when written."""
    ns, uid = body["metadata"]["namespace"], body["metadata"].get("uid")
    name = K.history_configmap_name(suite)
    for _ in range(ATTEMPTS):
        cm, doc, problem = read_history(api, ns, suite)
        if cm is not None and not _is_ours(cm, "history"):
            return problem
        base = doc if doc is not None else (fallback or H.empty(suite))
        base = {k: v for k, v in base.items() if not k.startswith("_")}  # suite_inputs' notes are not stored
        new = H.append({**base, "suite": suite}, results, uid=uid)
        text = H.dumps(new)
        if _store(api, ns, name, suite_labels(suite, "history"), H.CONFIGMAP_KEY, text, cm):
            return None
    raise RuntimeError(f"configmap/{name}: changed by another writer {ATTEMPTS} times in a row")


def suite_inputs(api: Api, spec, ns: str, run_name: str, suite: str, started_at: str | None = None, uid=None):
    """(baseline, history, acks) of a run from the cluster. The history: `suite_history` (its source and any
    problem under the document's `_source` and `_problem` keys, for the report). The baseline: a pinned
    ConfigMap, or the suite's last healthy runs pooled per case (spec.baseline.source previous)."""
    history, previous = None, False
    acks = suite_acks(api, ns, suite)
    try:
        found = suite_history(api, ns, suite, run_name, started_at, uid)
        history, previous = found.doc, found.previous
        if history is not None:
            history = {**history, "_source": found.source, "_problem": found.problem}
    except Exception as e:  # a broken history must not block the results
        if transient(e):  # API trouble of the moment (issue 19): retried, never read as "no history"
            raise
        log.warning("history of suite %s in %s unavailable: %s", suite, ns, e)
    if spec.baseline.source == "none":
        return None, history, acks
    try:
        if spec.baseline.source == "configMap":  # missing or garbage: said (report line, condition), not ignored
            cm = api.read_configmap(ns, spec.baseline.config_map)
            return B.from_configmap(cm, spec.baseline.config_map, ns), history, acks
        if not previous or history is None:
            return None, history, acks
        return B.from_history(history, exclude_run=run_name, accepted=acks), history, acks
    except Exception as e:  # a broken baseline must not block the results
        if transient(e):  # API trouble of the moment (issue 19): retried, never read as "baseline unavailable"
            raise
        log.warning("baseline for %s/%s unavailable: %s", ns, run_name, e)
        if spec.baseline.source == "configMap":
            return B.unavailable(str(e) if isinstance(e, B.BaselineError) else f"baseline: {e}"), history, acks
        return None, history, acks


# --- accepts and acks by annotation -----------------------------------------------------------------------------


def annotation_entries(annotation: str, value: str, run: str, case_ids: list[str]) -> list[dict]:
    """The acks entries an annotation asks for; ValueError names a case the run does not have."""
    note = f"kubectl annotate br {run} {annotation}={value}"
    entries = []
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        case, _, metric = item.partition("/")
        case = "*" if case in ("all", "*") else case
        if case != "*" and case not in case_ids:
            raise ValueError(f"{annotation}: run {run} has no case {case!r} (its cases: {', '.join(case_ids)})")
        if annotation == A_ACCEPT:
            entries.append(ack_entry("accept", run, case, note=note))
        else:
            entries.append(ack_entry("ack", run, case, metric or None, note=note))
    if not entries:
        raise ValueError(f"{annotation}: empty value (a case id, several separated by commas, or all)")
    return entries


def apply_annotations(api: Api, body: dict, suite: str, case_ids: list[str]) -> list[tuple[str, str, str]]:
    """Record a finished run's accept/ack annotations in the suite's acks (each value once); the Events to post.
    Never raises for a bad value: a Warning Event says what is wrong, and the value counts as handled."""
    meta = body["metadata"]
    ann = meta.get("annotations") or {}
    try:
        recorded = json.loads(ann.get(A_RECORDED) or "{}")
        recorded = recorded if isinstance(recorded, dict) else {}
    except ValueError:
        recorded = {}
    todo = {a: ann[a] for a in (A_ACCEPT, A_ACK) if a in ann and recorded.get(a) != ann[a]}
    if not todo:
        return []
    events = []
    for annotation, value in todo.items():
        try:
            entries = annotation_entries(annotation, value, meta["name"], case_ids)
            added, _ = record_ack(api, meta["namespace"], suite, entries)
        except (ValueError, AcksError) as e:
            events.append(("Warning", "AnnotationRefused", str(e)[:1000]))
        else:
            where = f"configmap/{K.acks_configmap_name(suite)}"
            cases = ", ".join(sorted({e["case"] for e in entries})).replace("*", "every case")
            if annotation == A_ACCEPT:
                msg = f"run {meta['name']} accepted as the baseline of {cases} ({where})"
                events.append(("Normal", "BaselineAccepted", msg))
            else:
                metrics = ", ".join(sorted({e["metric"] for e in entries})).replace("*", "every metric")
                msg = f"change points of run {meta['name']} acknowledged: {cases}, {metrics} ({where})"
                events.append(("Normal", "ChangePointsAcknowledged", msg))
            if not added:
                events[-1] = (events[-1][0], events[-1][1], events[-1][2] + "; already recorded")
        recorded[annotation] = value
    patch = {"metadata": {"annotations": {A_RECORDED: json.dumps(recorded, sort_keys=True)}}}
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
        _content_type="application/merge-patch+json", _preload_content=False,
    )  # fmt: skip
    return events


def tend_finished(api: Api, body: dict, suite: str, metrics) -> list[tuple[str, str, str]]:
    """On each tick of a finished run: record its accept/ack annotations, and, when it is the suite's newest run
    and the change-point gauge still shows some, re-read the suite's acks (`trainbench baseline ack` writes them
    without the operator) so that an ack removes its change points from the gauge. The Events to post."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    case_ids = [c.get("id") for c in (body.get("status") or {}).get("cases") or [] if c.get("id")]
    events = apply_annotations(api, body, suite, case_ids)
    if events or (metrics.newest(ns, suite) == name and metrics.open_change_points(ns, suite)):
        metrics.set_acks(ns, suite, suite_acks(api, ns, suite))
    return events
