"""The API server: KMock's KubernetesEmulator plus what a real API server adds (the package docstring lists it)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from collections import Counter
from pathlib import Path

import aiohttp.web
import kmock

from .common import JOBSETS, apply_patch, merge_diff, now_iso, parse_selector
from .openapi import openapi_v3
from .schema import SchemaValidator
from .table import table

CORE = {
    # plural: (kind, subresources, namespaced)
    "pods": ("Pod", {"status", "log"}, True),
    "configmaps": ("ConfigMap", set(), True),
    "services": ("Service", {"status"}, True),
    "events": ("Event", set(), True),
    "nodes": ("Node", {"status"}, False),
    "namespaces": ("Namespace", {"status"}, False),
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
KEEP_REQUESTS = 600  # requests KMock keeps for inspection (count creations with KubeSim.creations/create_requests)


def _status_response(code: int, message: str):
    reasons = {403: "Forbidden", 409: "Conflict", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError"}
    reasons.update({503: "ServiceUnavailable", 504: "Timeout"})
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message}
    body.update(reason=reasons.get(code, "BadRequest"), code=code)
    return aiohttp.web.json_response(body, status=code)


class KubeSim(kmock.KubernetesEmulator):
    """KMock's emulator with the API-server behaviour listed in the module docstring."""

    def __init__(self, crds: list[dict], jobset: bool = False, faults=None, **kwargs):
        super().__init__(**kwargs)
        self.faults = faults  # a faults.FaultPlan consulted on every request (None: no faults)
        self.creations: Counter = Counter()  # (plural, namespace, name) -> objects created through the API
        self.create_requests: Counter = Counter()  # (plural, namespace, name) -> create requests, any answer
        self._rv = 0
        self._validators: dict[tuple, SchemaValidator] = {}
        self._crds: dict[tuple, dict] = {}
        self._status_resources = set()
        self.logs: dict[tuple[str, str], Path] = {}  # (namespace, pod) -> log file (the kubelet writes it)
        for plural, (kind, subs, namespaced) in CORE.items():
            self.declare("", "v1", plural, kind, subs, namespaced)
        self.declare("batch", "v1", "jobs", "Job", {"status"}, True)
        self.declare("events.k8s.io", "v1", "events", "Event", set(), True)
        self.jobset = jobset
        if jobset:
            self.declare("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", {"status"}, True)
        for crd in crds:
            names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
            key = (crd["spec"]["group"], version["name"], names["plural"])
            self.declare(
                *key,
                names["kind"],
                set(version.get("subresources") or {}),
                crd["spec"]["scope"] == "Namespaced",
                singular=names.get("singular"),
                shortnames=names.get("shortNames") or [],
                categories=names.get("categories") or [],
            )
            self._validators[key] = SchemaValidator(crd)
            self._crds[key] = crd

    def declare(self, group, version, plural, kind, subresources, namespaced, **info):
        res = kmock.resource(group, version, plural)
        self.resources[res] = kmock.ResourceInfo(
            kind=kind,
            namespaced=namespaced,
            verbs=VERBS,
            subresources=subresources,
            singular=info.get("singular") or kind.lower(),
            shortnames=info.get("shortnames") or [],
            categories=info.get("categories") or [],
        )
        if "status" in subresources:
            self._status_resources.add(res)

    # -- helpers shared by the request path and the in-process controllers --
    def next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _kind(self, res) -> tuple[str, str]:
        info = self.resources[res]
        api_version = f"{res.group}/{res.version}" if res.group else res.version
        return info.kind, api_version

    def _key(self, res) -> tuple:
        return (res.group, res.version, res.plural)

    def _stamp_new(self, res, obj: dict, namespace: str | None) -> None:
        kind, api_version = self._kind(res)
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        if namespace and self.resources[res].namespaced:
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self.next_rv()
        meta["generation"] = 1
        meta["creationTimestamp"] = now_iso()
        meta.pop("deletionTimestamp", None)

    def _invalid(self, res, name: str, errors: list[tuple[str, str]]) -> kmock.KubernetesError:
        kind = self.resources[res].kind
        text = ", ".join(f"{p}: {m}" for p, m in errors)
        return kmock.KubernetesError(
            status=422,
            reason="Invalid",
            message=f'{kind}.{res.group} "{name}" is invalid: {text}',
            details={
                "name": name,
                "group": res.group,
                "kind": kind,
                "causes": [{"reason": "FieldValueInvalid", "message": m, "field": p} for p, m in errors],
            },
        )

    def find(self, res, namespace, name):
        key = (res, namespace, name)
        obj = self.objects[key] if key in self.objects else None  # noqa: SIM401 (ObjectsArray has no .get)
        return None if obj is None or obj.deleted else obj

    # -- the request path --
    async def __call__(self, raw_request):
        rule = None
        if self.faults is not None:
            watch = raw_request.query.get("watch") in ("true", "1")
            name = await self._request_name(raw_request) if self.faults.wants_names() else None
            agent = raw_request.headers.get("User-Agent", "")
            rule = self.faults.pick(raw_request.method, raw_request.path, watch, name, agent)
        if rule is not None and rule.kind == "slow":
            await asyncio.sleep(rule.delay)
        elif rule is not None and rule.kind == "hang":  # no answer: the client's timeout must give up first
            loop = asyncio.get_running_loop()
            until = loop.time() + (rule.delay or 3600.0)
            while loop.time() < until and raw_request.transport is not None and not raw_request.transport.is_closing():
                await asyncio.sleep(0.1)  # until the client gives up (closes the connection)
            return _status_response(504, f"injected fault: no answer to {raw_request.path}")
        elif rule is not None and rule.kind == "error":
            text = rule.message or f"injected fault: {rule.status} on {raw_request.path}"
            return _status_response(rule.status, text)
        response = await self._serve(raw_request)
        if len(self._requests) > KEEP_REQUESTS:  # KMock scans every request it kept on each request: O(n^2) over a
            del self._requests[: -(KEEP_REQUESTS * 2 // 3)]  # long test (a GET took 10 s after ~20 min)
        if rule is not None and rule.kind == "lost":  # carried out, but the answer is an error
            return _status_response(rule.status, f"injected fault: the answer to {raw_request.path} was lost")
        return response

    @staticmethod
    async def _request_name(raw_request) -> str | None:
        """The name of the object a request is about: a create's body (read once; aiohttp keeps it for KMock),
        else the path's segment after the resource."""
        if raw_request.method == "POST":
            try:
                body = json.loads(await raw_request.read() or b"{}")
                return ((body.get("metadata") or {}).get("name")) if isinstance(body, dict) else None
            except ValueError:
                return None
        m = re.search(r"/namespaces/[^/]+/[^/]+/([^/]+)", raw_request.path)
        return m.group(1) if m else None

    async def _serve_watch(self, request):
        """KMock's watch stream, each event held back `faults.watch_lag` seconds (from when it happened)."""
        lag = self.faults.lag(request.resource.plural) if self.faults is not None else 0.0
        if not lag:
            async for event in super()._serve_watch(request):
                yield event
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def pump():
            async for event in super(KubeSim, self)._serve_watch(request):
                await queue.put((loop.time(), event))

        task = asyncio.create_task(pump())
        try:
            while True:
                at, event = await queue.get()
                if event != b"":
                    await asyncio.sleep(max(0.0, at + lag - loop.time()))
                    self.faults.injected["lag watch-event"] += 1
                yield event
        finally:
            task.cancel()

    async def _serve(self, raw_request):
        # KMock 0.8 parses /api/v1/namespaces as "namespace <missing>" and fails: serve namespaces here
        m = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", raw_request.path)
        if m:
            return await self._namespaces(raw_request, m.group(1))
        m = re.fullmatch(r"/openapi/v3(?:/apis/([^/]+)/([^/]+))?/?", raw_request.path)
        if m:
            return openapi_v3(self._crds, m.group(1), m.group(2))
        return await super().__call__(raw_request)

    def _namespace_objects(self) -> list[dict]:
        names = {"default", "kube-system"} | {ns for (_, ns, _), o in self.objects.items() if ns and not o.deleted}
        return [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": n, "uid": n, "resourceVersion": "1"},
                "status": {"phase": "Active"},
            }
            for n in sorted(names)
        ]

    async def _namespaces(self, raw_request, name: str | None):
        items = self._namespace_objects()
        if name:
            found = [o for o in items if o["metadata"]["name"] == name]
            if not found:
                return aiohttp.web.json_response(
                    {"kind": "Status", "apiVersion": "v1", "code": 404, "reason": "NotFound"}, status=404
                )
            return aiohttp.web.json_response(found[0])
        if raw_request.query.get("watch") in ("true", "1"):
            resp = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(raw_request)
            for o in items:
                await resp.write(json.dumps({"type": "ADDED", "object": o}).encode() + b"\n")
            await asyncio.sleep(float(raw_request.query.get("timeoutSeconds") or 3600))
            return resp
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _handle(self, request):
        res = request.resource
        if res is not None and res.plural and res in self.resources:
            if request.subresource == "log" and request.action == kmock.action.FETCH:
                return self._serve_log(request)
            accept = request.headers.get("Accept", "")
            if "as=Table" in accept and request.action in (kmock.action.LIST, kmock.action.FETCH):
                return aiohttp.web.json_response(self._table(request))
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                self._admit_create(request)
            elif request.action == kmock.action.UPDATE and request.name and request.data is not None:
                self._admit_update(request)
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            key = (request.resource.plural, request.namespace, request.data.get("metadata", {}).get("name"))
            self.create_requests[key] += 1
        response = await super()._handle(request)
        if request.action == kmock.action.CREATE and isinstance(request.data, dict) and response.status < 300:
            self.creations[(request.resource.plural, request.namespace, request.data["metadata"].get("name"))] += 1
        if request.action in (kmock.action.DELETE, kmock.action.UPDATE):  # deletes, finalizers removed
            await self.collect_garbage()
        return response

    def _strict(self, request, obj: dict) -> None:
        """fieldValidation=Strict (kubectl's default): unknown fields are refused (400), not pruned."""
        validator = self._validators.get(self._key(request.resource))
        if validator is None or (request.params or {}).get("fieldValidation") != "Strict":
            return
        unknown = [path for path, _ in validator.unknown_fields(obj)]
        if unknown:
            kind = self.resources[request.resource].kind
            raise kmock.KubernetesError(
                status=400,
                reason="BadRequest",
                message=f'{kind} in version "{request.resource.version}" cannot be handled as a {kind}: '
                + "strict decoding error: "
                + ", ".join(f'unknown field "{path}"' for path in unknown),
            )

    def _admit_create(self, request) -> None:
        res, obj = request.resource, request.data
        self._strict(request, obj)
        self._stamp_new(res, obj, request.namespace)
        if self._key(res) in self._validators:
            obj.pop("status", None)  # a custom resource's status is written through /status only
        validator = self._validators.get(self._key(res))
        if validator is not None:
            errors = validator.admit(obj)
            if errors:
                raise self._invalid(res, obj["metadata"].get("name", ""), errors)
        if res == JOBSETS:  # JobSet's own schema (its CRD and webhook, as far as the tests need them)
            from jobset_schema import jobset_errors

            errors = [("", e) for e in jobset_errors(obj)]
            if errors:
                raise self._invalid(res, obj["metadata"].get("name", ""), errors)

    def _admit_update(self, request) -> None:
        """Compute the object the patch (merge or JSON) leads to, apply the API server's rules to it, then
        rewrite the request's patch so that KMock stores exactly that object."""
        res, data = request.resource, request.data
        current = self.find(res, request.namespace, request.name)
        if current is None or not isinstance(data, (dict, list)):
            return  # KMock answers 404
        old = copy.deepcopy(current.raw)
        try:
            proposed = apply_patch(old, data)
        except Exception as e:  # a failed `test` op (kopf tests resourceVersion): 422, as a real server
            raise kmock.KubernetesError(status=422, reason="Invalid", message=f"the JSON patch failed: {e}") from None
        self._strict(request, proposed)
        final = dict(proposed)
        if res in self._status_resources:
            if request.subresource == "status":  # /status changes status only
                final = {**old, "status": proposed.get("status")}
            else:  # the main resource never changes status
                final = {k: v for k, v in proposed.items() if k != "status"}
                if "status" in old:
                    final["status"] = old["status"]
        if final.get("status") is None:
            final.pop("status", None)
        meta = final["metadata"] = dict(final.get("metadata") or {})
        for immutable in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if immutable in old["metadata"]:
                meta[immutable] = old["metadata"][immutable]
        meta["resourceVersion"] = self.next_rv()
        if final.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
            validator = self._validators.get(self._key(res))
            if validator is not None:
                errors = validator.admit(final)
                if errors:
                    raise self._invalid(res, request.name, errors)
        if isinstance(data, list):
            data[:] = [{"op": "add", "path": f"/{k}", "value": v} for k, v in final.items()]
            data += [{"op": "remove", "path": f"/{k}"} for k in old if k not in final]
        else:
            data.clear()
            data.update(merge_diff(old, final))

    async def _serve_version(self, request):
        """APIResourceList as a real server writes it: `v1` (not `/v1`) for the core group, and
        subresources without short names or categories (else `kubectl get br` is ambiguous)."""
        doc = await super()._serve_version(request)
        if doc["groupVersion"].startswith("/"):
            doc["groupVersion"] = doc["groupVersion"][1:]
        for r in doc["resources"]:
            if "/" in r["name"]:
                r.update(shortNames=[], categories=[], verbs=["get", "patch", "update"])
                if r["name"].endswith("/log"):
                    r["verbs"] = ["get"]
        return doc

    async def _serve_list(self, request):
        result = await super()._serve_list(request)
        kind, api_version = self._kind(request.resource)
        match = parse_selector(request.params.get("labelSelector", ""))
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [o for o in result["items"] if match(o)],
        }

    def _serve_log(self, request):
        path = self.logs.get((request.namespace, request.name))
        if path is None or not path.exists():
            raise kmock.KubernetesNotFoundError(message=f'pods "{request.name}" has no log')
        text = path.read_text(errors="replace")
        tail = request.params.get("tailLines")
        if tail:
            text = "\n".join(text.splitlines()[-int(tail) :]) + "\n"
        return aiohttp.web.Response(text=text, content_type="text/plain")

    def _table(self, request) -> dict:
        res = request.resource
        objs = [
            o.raw
            for (r, ns, name), o in self.objects.items()
            if r == res
            and not o.deleted
            and (request.namespace is None or ns == request.namespace)
            and (request.name is None or name == request.name)
        ]
        objs = [o for o in objs if parse_selector(request.params.get("labelSelector", ""))(o)]
        if request.name and not objs:
            raise kmock.KubernetesNotFoundError(reason="NotFound", message=f'"{request.name}" not found')
        crd = self._crds.get(self._key(res))
        columns = (crd["spec"]["versions"][0].get("additionalPrinterColumns") or []) if crd else []
        return table(objs, columns, str(self._rv))

    # -- in-process writes (controllers); the same bookkeeping and watch events as API requests --
    async def put(self, res, obj: dict) -> dict:
        async with self._lock:
            self._stamp_new(res, obj, obj["metadata"].get("namespace"))
            key = (res, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            raw = self.objects[key].raw
            await self._buses[res].put({"type": "ADDED", "object": raw})
            return raw

    async def patch(self, res, namespace, name, patch: dict) -> dict | None:
        async with self._lock:
            obj = self.find(res, namespace, name)
            if obj is None:
                return None
            patch = copy.deepcopy(patch)
            patch.setdefault("metadata", {})["resourceVersion"] = self.next_rv()
            obj.patch(patch)
            raw = obj.raw
            await self._buses[res].put({"type": "MODIFIED", "object": raw})
            return raw

    async def remove(self, res, namespace, name) -> None:
        async with self._lock:
            obj = self.find(res, namespace, name)
            if obj is None:
                return
            if obj.get("metadata", {}).get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    obj.patch({"metadata": {"deletionTimestamp": now_iso(), "resourceVersion": self.next_rv()}})
                    await self._buses[res].put({"type": "MODIFIED", "object": obj.raw})
                return
            raw = obj.raw
            obj.delete()
            await self._buses[res].put({"type": "DELETED", "object": raw})

    def live(self, res, namespace=None) -> list[dict]:
        return [
            o.raw
            for (r, ns, _), o in list(self.objects.items())
            if r == res and not o.deleted and (namespace is None or ns == namespace)
        ]

    async def collect_garbage(self) -> None:
        """Delete objects whose every owner is gone (cascading; like the garbage collector, background)."""
        while True:
            uids = {o.raw["metadata"].get("uid") for o in self.objects.values() if not o.deleted}
            orphans = []
            for (r, ns, name), o in list(self.objects.items()):
                if o.deleted:
                    continue
                owners = o.raw["metadata"].get("ownerReferences") or []
                gone = owners and not any(ref.get("uid") in uids for ref in owners)
                if gone and not o.raw["metadata"].get("deletionTimestamp"):
                    orphans.append((r, ns, name))
            if not orphans:
                return
            for key in orphans:
                await self.remove(*key)
