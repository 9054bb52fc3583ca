"""The operator's publish step: when a finished run has spec.publish, commit its report.md and results.json to
the git repository once (operator/publish.py does the git and forge work) and return the link the webhook
message carries.

Called from handlers.notify_once, where the webhook is sent, before the webhook (so the message can link to
the published report). Once: the outcome goes on the run's results ConfigMap as the annotation
`trainbench.dev/published` (JSON: commit, branch, path, reportUrl, pullRequest, at) and a later tick or a
restarted operator reads it back instead of publishing again. A failure is recorded as
`trainbench.dev/publish-error` (one line) and retried by a restarted operator only; it never fails the run.

Credentials: spec.publish.secretRef names a Secret in the run's namespace with `username` + `token` (or
`password`) for HTTPS, or `ssh-privatekey` (+ `known_hosts`) for SSH URLs; the operator needs `get` on that
Secret. Without a secretRef, the operator's own TRAINBENCH_GIT_TOKEN / TRAINBENCH_GIT_USERNAME environment is
used (the chart can set them from a Secret, like the webhook URL).

Without spec.publish, the link comes from TRAINBENCH_REPORT_URL_TEMPLATE when set (a dashboard or report
viewer; {namespace} {run} {suite} {configmap} are filled in), else there is none.
"""

from __future__ import annotations

import base64
import json
import logging
import os

from trainbench.operator import clock
from trainbench.operator import kube as K
from trainbench.operator import publish as P
from trainbench.operator.controller.client import Api, api_message
from trainbench.operator.results import document as R

log = logging.getLogger("trainbench.operator.publish")

A_PUBLISHED = "trainbench.dev/published"
A_PUBLISH_ERROR = "trainbench.dev/publish-error"
ENV_TOKEN = "TRAINBENCH_GIT_TOKEN"
ENV_USERNAME = "TRAINBENCH_GIT_USERNAME"
ENV_REPORT_URL = "TRAINBENCH_REPORT_URL_TEMPLATE"


class SecretError(RuntimeError):
    pass


def read_auth(api: Api, ns: str, secret_name: str | None) -> P.Auth | None:
    """The credentials of spec.publish.secretRef, else the operator's environment, else None."""
    if not secret_name:
        token = os.environ.get(ENV_TOKEN, "").strip()
        return P.Auth(username=os.environ.get(ENV_USERNAME) or None, token=token) if token else None
    try:
        resp = api.core.read_namespaced_secret(secret_name, ns, _preload_content=False)
        data = json.loads(resp.data or b"{}").get("data") or {}
    except api.client.ApiException as e:
        hint = " (the operator's role needs get on secrets)" if e.status == 403 else ""
        raise SecretError(f"Secret {ns}/{secret_name}: {e.status} {api_message(e)}{hint}") from None

    def value(*keys: str) -> str | None:
        found = next((data[k] for k in keys if data.get(k)), None)
        return base64.b64decode(found).decode() if found else None

    auth = P.Auth(
        username=(value("username") or "").strip() or None,
        token=(value("token", "password") or "").strip() or None,
        ssh_key=value("ssh-privatekey"),
        known_hosts=value("known_hosts"),
    )
    if not auth.token and not auth.ssh_key:
        raise SecretError(f"Secret {ns}/{secret_name}: has neither token (or password) nor ssh-privatekey")
    return auth


def target_of(publish: dict) -> P.Target:
    pr = publish.get("pullRequest")
    return P.Target(
        repo=publish["repo"],
        branch=publish.get("branch") or P.DEFAULT_BRANCH,
        path=publish.get("path") or P.DEFAULT_PATH,
        base=(pr or {}).get("base") or ("main" if pr is not None else None),
        report_url_template=publish.get("reportUrlTemplate"),
    )


def template_link(ns: str, run: str, suite: str, configmap: str) -> str | None:
    template = os.environ.get(ENV_REPORT_URL, "").strip()
    if not template:
        return None
    try:
        return template.format(namespace=ns, run=run, suite=suite, configmap=configmap)
    except (KeyError, IndexError, ValueError):
        log.warning("%s: unknown placeholder; use {namespace} {run} {suite} {configmap}", ENV_REPORT_URL)
        return None


def publish_once(api: Api, ns: str, body: dict, cm: dict, doc: dict | None) -> str | None:
    """Publish the finished run once when it has spec.publish; the report link for the webhook (or None)."""
    name = body["metadata"]["name"]
    spec = body.get("spec") or {}
    suite = (doc or {}).get("suite") or spec.get("suite") or name
    annotations = cm["metadata"].get("annotations") or {}
    results_cm = cm["metadata"]["name"]
    fallback = template_link(ns, name, suite, results_cm)
    publish = spec.get("publish")
    if not publish or doc is None:
        return fallback
    if A_PUBLISHED in annotations:  # done before (this operator or an earlier one)
        try:
            return json.loads(annotations[A_PUBLISHED]).get("reportUrl") or fallback
        except ValueError:
            return fallback
    # the status names the run's own report (another name when the usual one belongs to another object)
    report_name = (body.get("status") or {}).get("reportConfigMap") or K.report_configmap_name(name)
    report_cm = api.read_configmap(ns, report_name) or {}
    report = (report_cm.get("data") or {}).get(R.REPORT_KEY)
    try:
        if report is None:
            raise P.PublishError(f"configmap {report_name} has no {R.REPORT_KEY}")
        auth = read_auth(api, ns, (publish.get("secretRef") or {}).get("name"))
        pr = publish.get("pullRequest")
        date = (clock.parse_time(doc.get("completed_at") or doc.get("started_at")) or clock.now()).strftime("%Y-%m-%d")
        out = P.publish_run(
            target_of(publish),
            report=report,
            results=R.configmap_text(doc),
            suite=suite,
            run=name,
            date=date,
            auth=auth,
            pull_request=pr is not None,
            api=(pr or {}).get("api"),
            title=(pr or {}).get("title"),
        )
    except (P.PublishError, SecretError) as e:
        log.warning("run %s/%s: publishing failed: %s", ns, name, e)
        api.annotate_configmap(ns, results_cm, {A_PUBLISH_ERROR: f"{clock.iso(clock.now())} {e}"[:1000]})
        return fallback
    record = {
        "commit": out.commit,
        "branch": out.branch,
        "path": out.path,
        "reportUrl": out.report_url,
        "pullRequest": out.pull_request,
        "at": clock.iso(clock.now()),
    }
    # a merge patch: None removes the error of an earlier attempt
    api.annotate_configmap(
        ns, results_cm, {A_PUBLISHED: json.dumps(record, separators=(",", ":")), A_PUBLISH_ERROR: None}
    )
    log.info("run %s/%s: published %s@%s %s", ns, name, out.branch, out.commit[:12], out.report_url or "")
    return out.report_url or out.pull_request or fallback
