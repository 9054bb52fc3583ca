"""The one Kubernetes API client of trainbench (the operator, `trainbench run` without --local, `trainbench
submit`, and `configmap/NAME` sources of the CLI) and the one place that finds the cluster.

`connect()` finds the cluster the way kubectl does: an explicit kubeconfig or context (`--kubeconfig`,
`--context`, or the KUBECONFIG variable) first, else the pod's service account (in-cluster), else
~/.kube/config. The default namespace follows: the service account's, else the active context's, else
`default`. Objects go in and come out as plain JSON dicts.

Every call has a client-side timeout (`_request_timeout`, issue 19): (connect, read) seconds, default
`DEFAULT_REQUEST_TIMEOUT` (5, 30), overridden by `TRAINBENCH_API_TIMEOUT` ("READ" or "CONNECT,READ" seconds,
read at each call). A request whose answer does not come raises (urllib3's timeout errors), so a hung API server
costs the operator one tick, never holds it; the client does not send a timed-out request again by itself
(`_no_read_retries`), so a slow server gets no more load than its answers allow."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from trainbench.operator import kube as K

log = logging.getLogger("trainbench.operator")

JSON_PATCH = "application/json-patch+json"
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


_CHOSEN: dict[str, str | None] = {"kubeconfig": None, "context": None}


def choose(kubeconfig: str | None = None, context: str | None = None) -> None:
    """The command line's --kubeconfig / --context, for every client made afterwards in this process."""
    _CHOSEN.update(kubeconfig=kubeconfig, context=context)


class ClientError(RuntimeError):
    """No cluster to talk to (no kubernetes package, no kubeconfig, no service account), or a bad setting."""


DEFAULT_REQUEST_TIMEOUT = (5.0, 30.0)  # seconds: (connect, read) of every API call
TIMEOUT_ENV = "TRAINBENCH_API_TIMEOUT"


def request_timeout() -> tuple[float, float]:
    """(connect, read) seconds for an API call: TRAINBENCH_API_TIMEOUT ("READ" or "CONNECT,READ"), read now,
    else DEFAULT_REQUEST_TIMEOUT. A value that is not one or two positive numbers raises ClientError."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_REQUEST_TIMEOUT
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(0 < x < 86400 for x in parts):
        raise ClientError(f'{TIMEOUT_ENV}={text!r}: want "READ" or "CONNECT,READ" seconds, each more than 0')
    return (DEFAULT_REQUEST_TIMEOUT[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


class _Timed:
    """A kubernetes API object (CoreV1Api, ...) whose every call carries `_request_timeout` (request_timeout(),
    read at the call) unless the caller passes its own."""

    def __init__(self, target) -> None:
        self._target = target

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args, **kwargs):
            kwargs.setdefault("_request_timeout", request_timeout())
            return attr(*args, **kwargs)

        return call


def connect(kubeconfig: str | None = None, context: str | None = None) -> tuple[object, str]:
    """Load the client configuration; returns (the kubernetes.client module, the default namespace)."""
    try:
        from kubernetes import client, config
    except ImportError:  # pragma: no cover - the operator extra is missing
        raise ClientError(
            "talking to a cluster needs the kubernetes package (pip install trainbench[operator])"
        ) from None
    # KUBECONFIG is read now: the client's own default was fixed when it was imported
    kubeconfig = kubeconfig or _CHOSEN["kubeconfig"] or os.environ.get("KUBECONFIG") or None
    context = context or _CHOSEN["context"]
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()
            ns = SA_NAMESPACE_FILE.read_text().strip() if SA_NAMESPACE_FILE.exists() else "default"
            _no_read_retries(client)
            return client, ns or "default"
        except config.ConfigException:
            pass
    try:
        config.load_kube_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError) as e:
        raise ClientError(f"no cluster: {e}") from None
    _no_read_retries(client)
    if context is not None:
        contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
        active = next((c for c in contexts if c.get("name") == context), active)
    return client, (active or {}).get("context", {}).get("namespace") or "default"


def _no_read_retries(client) -> None:
    """A request whose answer did not come in time is not sent again by the client (urllib3 retries a GET 3 times
    by default: 4 read timeouts in a row, and 4 times the load on a server that is only slow): it fails, and the
    caller (the operator's next tick) tries again. Connections that fail are still retried."""
    import urllib3

    cfg = client.Configuration.get_default_copy()
    cfg.retries = urllib3.Retry(total=3, read=0, redirect=3, backoff_factor=0.2)
    client.Configuration.set_default(cfg)


class Api:
    """The API calls trainbench makes (kubernetes client; JSON dicts in and out)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        request_timeout()  # a bad TRAINBENCH_API_TIMEOUT is said once, at the start, not on every call
        client, self.namespace = connect(kubeconfig, context)
        self.client = client
        # every call through these has a client-side timeout: a hung request becomes an error, never a held tick
        self.core = _Timed(client.CoreV1Api())
        self.batch = _Timed(client.BatchV1Api())
        self.custom = _Timed(client.CustomObjectsApi())
        self._served: dict[tuple[str, str, str], tuple[float, bool]] = {}

    @staticmethod
    def _json(resp) -> dict:
        return json.loads(resp.data or b"{}")

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

    # --- reading ---

    def list_jobsets(self, ns: str, selector: str) -> list[dict]:
        r = self.custom.list_namespaced_custom_object(
            K.JOBSET_GROUP, K.JOBSET_VERSION, ns, K.JOBSET_PLURAL, label_selector=selector, _preload_content=False
        )
        return self._json(r).get("items") or []

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

    def read_custom(self, group: str, version: str, plural: str, ns: str, name: str) -> dict | None:
        """A custom object read through the API (not a watch cache); None when it is gone."""
        try:
            r = self.custom.get_namespaced_custom_object(group, version, ns, plural, name, _preload_content=False)
            return self._json(r)
        except self.client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_custom_status(self, group: str, version: str, plural: str, ns: str, name: str, status: dict) -> dict:
        """A JSON merge patch of a custom object's status subresource (keys set to None are removed)."""
        r = self.custom.patch_namespaced_custom_object_status(
            group, version, ns, plural, name, {"status": status},
            _content_type="application/merge-patch+json", _preload_content=False,
        )  # fmt: skip
        return self._json(r)

    def pod_log(self, ns: str, name: str, lines: int) -> str:
        try:
            r = self.core.read_namespaced_pod_log(
                name, ns, container=K.CONTAINER, tail_lines=lines, _preload_content=False
            )
            return (r.data or b"").decode("utf-8", errors="replace")
        except self.client.ApiException as e:
            log.info("no log for pod %s/%s: %s", ns, name, e.reason)
            return ""

    # --- writing ---

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

    def create_custom(self, group: str, version: str, plural: str, ns: str, obj: dict) -> dict:
        """Create a custom object (a BenchmarkRun); ApiException as raised (409: the name is taken)."""
        return self.custom.create_namespaced_custom_object(group, version, ns, plural, obj)

    def apply_configmap(self, obj: dict) -> None:
        if not self.create(obj):
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            self.core.patch_namespaced_config_map(name, ns, {"data": obj["data"]}, _preload_content=False)

    def annotate_configmap(self, ns: str, name: str, annotations: dict[str, str]) -> None:
        body = {"metadata": {"annotations": annotations}}
        self.core.patch_namespaced_config_map(name, ns, body, _preload_content=False)

    def remove_finalizer(self, kind: str, ns: str, name: str, finalizer: str) -> None:
        """Take `finalizer` off a Job or JobSet (a JSON patch that tests the list it edits; gone: nothing to do)."""
        try:
            if kind == "Job":
                obj = self._json(self.batch.read_namespaced_job(name, ns, _preload_content=False))
            else:
                obj = self.read_custom(K.JOBSET_GROUP, K.JOBSET_VERSION, K.JOBSET_PLURAL, ns, name) or {}
            fins = (obj.get("metadata") or {}).get("finalizers") or []
            if finalizer not in fins:
                return
            body = [
                {"op": "test", "path": "/metadata/finalizers", "value": fins},
                {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in fins if f != finalizer]},
            ]
            if kind == "Job":
                self.batch.patch_namespaced_job(name, ns, body, _content_type=JSON_PATCH, _preload_content=False)
            else:
                self.custom.patch_namespaced_custom_object(
                    K.JOBSET_GROUP, K.JOBSET_VERSION, ns, K.JOBSET_PLURAL, name, body,
                    _content_type=JSON_PATCH, _preload_content=False,
                )  # fmt: skip
        except self.client.ApiException as e:
            if e.status != 404:
                raise

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


def transient(e: BaseException) -> bool:
    """Whether an error from an API call is trouble of the moment (a 5xx, 429, 408, a timeout, a connection that
    failed): the call is to be retried later, never read as an answer (no object, no baseline, no history)."""
    status = getattr(e, "status", None)
    if any(c.__name__ == "ApiException" for c in type(e).__mro__):  # and its ServiceException (5xx), NotFound...
        return not status or status in (408, 429) or status >= 500
    try:
        import urllib3
    except ImportError:  # pragma: no cover - urllib3 comes with the kubernetes package
        return isinstance(e, (TimeoutError, ConnectionError))
    return isinstance(e, (urllib3.exceptions.HTTPError, TimeoutError, ConnectionError))


def api_message(e: Exception) -> str:
    """The API server's own message of an ApiException (its `reason` when the body says nothing)."""
    try:
        return json.loads(e.body).get("message") or str(e.reason)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not an ApiException with a JSON body
        return str(getattr(e, "reason", None) or e)
