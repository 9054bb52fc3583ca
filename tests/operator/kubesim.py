"""A small Kubernetes for the operator tests: KMock's KubernetesEmulator plus what a real cluster adds.

The operator under test (kopf, the kubernetes client) and `kubectl` talk to it over real HTTP through a
generated kubeconfig. KMock 0.8 stores objects, serves list/watch/get/create/patch/delete and streams
watch events; this subclass adds, in `KubeSim`:

- discovery that kubectl understands (core/v1 and batch/v1 resources, the CRD's kind, short name, category);
- `kind`/`apiVersion`/`resourceVersion` on lists; uid, resourceVersion, generation, creationTimestamp on
  objects; label selectors on lists;
- the status subresource (a status patch changes only status; a main patch never changes status);
- the CRD's openAPIV3Schema on create and update: defaults, type/enum/minimum/pattern checks (jsonschema)
  and the x-kubernetes-validations CEL rules (cel-python), answering 422 Invalid like an API server;
- server-side Table printing for `kubectl get` with the CRD's additionalPrinterColumns;
- garbage collection of objects whose owner (ownerReferences uid) is gone;
- pods' `log` subresource.

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

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import aiohttp.web
import celpy
import jsonschema
import kmock
import yaml
from kmock._internal import dicts as kdicts
from kmock._internal import enums

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "manifests" / "crd.yaml"


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the CRD's schema: defaults, validation, CEL ------------------------------------------------------------


def apply_defaults(obj, schema: dict):
    """Structural defaulting as the API server does it: fill absent properties that have a default."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        for name, sub in (schema.get("properties") or {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                apply_defaults(obj[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in obj:
                apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])
    return obj


def prune(obj, schema: dict):
    """Drop fields the schema does not know (a structural schema prunes them; kubectl --validate=false)."""
    if isinstance(obj, dict) and schema.get("type") == "object" and "properties" in schema:
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return obj
        for key in list(obj):
            if key in schema["properties"]:
                prune(obj[key], schema["properties"][key])
            elif key not in ("apiVersion", "kind", "metadata"):
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            prune(item, schema["items"])
    return obj


def _cel_errors(obj, schema: dict, path: str, env: celpy.Environment) -> list[tuple[str, str]]:
    errors = []
    for rule in schema.get("x-kubernetes-validations") or []:
        prog = env.program(env.compile(rule["rule"]))
        try:
            ok = prog.evaluate({"self": celpy.json_to_cel(obj)})
        except Exception as e:  # an evaluation error is a failed rule on a real server too
            ok = False
            rule = {**rule, "message": f"{rule.get('message', rule['rule'])} ({e})"}
        if not bool(ok):
            errors.append((path + rule.get("fieldPath", ""), rule.get("message") or f"failed rule: {rule['rule']}"))
    if isinstance(obj, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if name in obj:
                errors += _cel_errors(obj[name], sub, f"{path}.{name}", env)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errors += _cel_errors(item, schema["items"], f"{path}[{i}]", env)
    return errors


class SchemaValidator:
    """Validate and default objects of one CRD version like the API server (schema, then CEL)."""

    def __init__(self, crd: dict):
        version = crd["spec"]["versions"][0]
        self.crd = crd
        self.schema = version["schema"]["openAPIV3Schema"]
        # OpenAPI v3.0 `exclusiveMinimum: true` is draft-4 syntax
        self.validator = jsonschema.Draft4Validator(self.schema)
        self.env = celpy.Environment()
        self.kind = crd["spec"]["names"]["kind"]
        self.group = crd["spec"]["group"]

    def admit(self, obj: dict) -> list[tuple[str, str]]:
        """Prune + default `obj` in place; return [(field path, message)] (empty: admitted)."""
        prune(obj, self.schema)
        apply_defaults(obj, self.schema)
        errors = []
        for err in sorted(self.validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
            errors.append((path, f"Invalid value: {json.dumps(err.instance)[:80]}: {err.message}"))
        if not errors:
            errors = [(p.lstrip("."), m) for p, m in _cel_errors(obj, self.schema, "", self.env)]
        return errors


# --- the API server ----------------------------------------------------------------------------------------

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


def merge_diff(old: dict, new: dict) -> dict:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`."""
    patch = {k: None for k in old if k not in new}
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            sub = merge_diff(old[k], v)
            if sub:
                patch[k] = sub
        elif old.get(k) != v or k not in old:
            patch[k] = v
    return patch


def _parse_selector(text: str):
    checks = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            checks.append(lambda labels, k=k, v=v: labels.get(k) != v)
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            checks.append(lambda labels, k=k, v=v: labels.get(k) == v)
        elif part.startswith("!"):
            checks.append(lambda labels, k=part[1:]: k not in labels)
        else:
            checks.append(lambda labels, k=part: k in labels)
    return lambda obj: all(c((obj.get("metadata") or {}).get("labels") or {}) for c in checks)


def _jsonpath(obj, path: str):
    value = obj
    for key in path.strip(".").split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    secs = int(time.time() - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    return f"{secs}s" if secs < 120 else f"{secs // 60}m"


class KubeSim(kmock.KubernetesEmulator):
    """KMock's emulator with the API-server behaviour listed in the module docstring."""

    def __init__(self, crds: list[dict], jobset: bool = False, **kwargs):
        super().__init__(**kwargs)
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
        # KMock 0.8 parses /api/v1/namespaces as "namespace <missing>" and fails: serve namespaces here
        m = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", raw_request.path)
        if m:
            return await self._namespaces(raw_request, m.group(1))
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
            if request.subresource == "log" and request.action == enums.action.FETCH:
                return self._serve_log(request)
            accept = request.headers.get("Accept", "")
            if "as=Table" in accept and request.action in (enums.action.LIST, enums.action.FETCH):
                return aiohttp.web.json_response(self._table(request))
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                self._admit_create(request)
            elif request.action == enums.action.UPDATE and request.name and request.data is not None:
                self._admit_update(request)
        response = await super()._handle(request)
        if request.action in (enums.action.DELETE, enums.action.UPDATE):  # deletes, finalizers removed
            await self.collect_garbage()
        return response

    def _admit_create(self, request) -> None:
        res, obj = request.resource, request.data
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
            proposed = kdicts.patch_dict(copy.deepcopy(old), data)
        except Exception as e:  # a failed `test` op (kopf tests resourceVersion): 422, as a real server
            raise kmock.KubernetesError(status=422, reason="Invalid", message=f"the JSON patch failed: {e}") from None
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
        match = _parse_selector(request.params.get("labelSelector", ""))
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
        objs = [o for o in objs if _parse_selector(request.params.get("labelSelector", ""))(o)]
        if request.name and not objs:
            raise kmock.KubernetesNotFoundError(reason="NotFound", message=f'"{request.name}" not found')
        crd = self._crds.get(self._key(res))
        cols = (crd["spec"]["versions"][0].get("additionalPrinterColumns") or []) if crd else []
        if not any(c["jsonPath"] == ".metadata.creationTimestamp" for c in cols):
            cols = [*cols, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
        defs = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
        defs += [
            {"name": c["name"], "type": c["type"], "format": "", "description": c.get("description", ""), "priority": 0}
            for c in cols
        ]
        rows = []
        for o in sorted(objs, key=lambda o: o["metadata"]["name"]):
            cells = [o["metadata"]["name"]]
            for c in cols:
                v = _jsonpath(o, c["jsonPath"])
                cells.append(_age(v) if c["type"] == "date" else v)
            meta = {
                k: o["metadata"].get(k) for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            }
            rows.append(
                {
                    "cells": cells,
                    "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": defs,
            "rows": rows,
        }

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


# --- controllers: Job -> Pod, scheduler, kubelet -------------------------------------------------------------

JOBS = kmock.resource("batch", "v1", "jobs")
JOBSETS = kmock.resource("jobset.x-k8s.io", "v1alpha2", "jobsets")
SERVICES = kmock.resource("", "v1", "services")
JOBSET_LABEL = "jobset.sigs.k8s.io/"  # the prefix of the labels and annotations JobSet puts on Jobs and pods
MISSING_IMAGE_PREFIX = "missing.example/"  # images the fake kubelet cannot pull
PODS = kmock.resource("", "v1", "pods")
NODES = kmock.resource("", "v1", "nodes")


def _parse_quantity(q: str | None) -> int | None:
    if not q:
        return None
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        return None
    mult = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    mult["Ti"] = 2**40
    return int(float(m.group(1)) * mult[m.group(2)])


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def translate_command(container: dict, python: str, output: Path, env: dict | None = None) -> list[str]:
    """`torchrun [opts] -m trainbench.trainer ARGS` -> `python -m trainbench.trainer ARGS --device cpu
    --output FILE` (one process: the tests run tiny configs on CPU). A pod of a multi-node case
    (PET_NNODES > 1) runs torchrun for real, one CPU process per pod, so the pods rendezvous through the
    PET_* environment exactly as on a cluster."""
    cmd = list(container.get("command") or []) + list(container.get("args") or [])
    if "-m" not in cmd:
        raise ValueError(f"cannot run {cmd!r} here: expected torchrun ... -m MODULE ...")
    i = cmd.index("-m")
    tail = [*cmd[i + 1 :], "--device", "cpu", "--output", str(output)]
    if int((env or {}).get("PET_NNODES", "1")) > 1:
        return [python, "-m", "torch.distributed.run", "--nproc-per-node=1", "-m", *tail]
    return [python, "-m", *tail]


class Controllers:
    """Job controller, scheduler and kubelet: one asyncio task polling every `period` seconds."""

    def __init__(self, sim: KubeSim, nodes: list[dict], workdir: Path, period: float = 0.25):
        self.sim, self.nodes, self.workdir, self.period = sim, nodes, workdir, period
        self.procs: dict[str, dict] = {}  # pod uid -> {proc, started, log, term, limit, ns, name}
        self.max_running: dict[str, int] = {}  # pool -> most pods running at once (for maxConcurrent checks)
        self.rdzv_ports: dict[str, int] = {}  # Job uid -> the rendezvous port its pods share

    async def setup(self) -> None:
        for node in self.nodes:
            await self.sim.put(NODES, copy.deepcopy(node))

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as e:  # keep the cluster alive; a test sees the effect
                print(f"kubesim controllers: {e!r}", file=sys.stderr)
            await asyncio.sleep(self.period)

    async def step(self) -> None:
        if self.sim.jobset:
            for jobset in self.sim.live(JOBSETS):
                await self._jobset(jobset)
        for job in self.sim.live(JOBS):
            await self._job(job)
        for pod in self.sim.live(PODS):
            await self._pod(pod)
        # kill processes of pods that are gone (deleted Job -> garbage-collected pod)
        alive = {p["metadata"]["uid"] for p in self.sim.live(PODS)}
        for uid, info in list(self.procs.items()):
            if uid not in alive:
                if info["proc"].returncode is None:
                    info["proc"].kill()
                    await info["proc"].wait()
                del self.procs[uid]
        running: dict[str, int] = {}
        for pod in self.sim.live(PODS):
            if (pod.get("status") or {}).get("phase") == "Running":
                pool = (pod["metadata"].get("labels") or {}).get("trainbench.dev/pool", "")
                running[pool] = running.get(pool, 0) + 1
        for pool, n in running.items():
            self.max_running[pool] = max(self.max_running.get(pool, 0), n)

    async def _job(self, job: dict) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        if any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            return
        if spec.get("suspend"):
            return
        ns = meta["namespace"]
        pods = [
            p
            for p in self.sim.live(PODS, ns)
            if any(o.get("uid") == meta["uid"] for o in p["metadata"].get("ownerReferences") or [])
        ]
        if not status.get("startTime"):
            await self.sim.patch(JOBS, ns, meta["name"], {"status": {"startTime": now_iso(), "active": 0}})
        want = int(spec.get("completions") or 1) if spec.get("completionMode") == "Indexed" else 1
        have = {(p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-completion-index", "0") for p in pods}
        missing = [i for i in range(want) if str(i) not in have]
        if missing:
            for index in missing:
                await self._create_pod(job, index)
            return
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        deadline = spec.get("activeDeadlineSeconds")
        started = status.get("startTime")
        if (
            deadline
            and started
            and time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp() > deadline
        ):
            for p in pods:
                if (p.get("status") or {}).get("phase") in ("Pending", "Running"):
                    await self._kill(p, reason="DeadlineExceeded")
            await self._finish_job(job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
            return
        if all(ph == "Succeeded" for ph in phases) and len(phases) >= int(spec.get("completions") or 1):
            await self._finish_job(job, "Complete", None, None, succeeded=len(phases))
        elif any(ph == "Failed" for ph in phases):
            await self._finish_job(
                job, "Failed", "PodFailurePolicy", "Container trainer for pod failed with a non-zero exit code"
            )
        else:
            await self.sim.patch(
                JOBS, ns, meta["name"], {"status": {"active": sum(ph in ("Pending", "Running") for ph in phases)}}
            )

    async def _jobset(self, js: dict) -> None:
        """The JobSet controller, for what the tests use: no restarts, startup policy or dependencies."""
        meta, spec, status = js["metadata"], js["spec"], js.get("status") or {}
        if status.get("terminalState") or spec.get("suspend"):
            return  # finished; or suspended (JobSet would keep its Jobs suspended: here, none exist yet)
        ns, name = meta["namespace"], meta["name"]
        owner = {
            "apiVersion": "jobset.x-k8s.io/v1alpha2",
            "kind": "JobSet",
            "name": name,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        network = spec.get("network") or {}
        subdomain = network.get("subdomain") or name
        if network.get("enableDNSHostnames") and self.sim.find(SERVICES, ns, subdomain) is None:
            await self.sim.put(
                SERVICES,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": subdomain, "namespace": ns, "ownerReferences": [owner]},
                    "spec": {
                        "clusterIP": "None",
                        "selector": {f"{JOBSET_LABEL}jobset-name": name},
                        "publishNotReadyAddresses": network.get("publishNotReadyAddresses", True),
                    },
                },
            )
        children = {
            j["metadata"]["name"]: j
            for j in self.sim.live(JOBS, ns)
            if any(o.get("uid") == meta["uid"] for o in j["metadata"].get("ownerReferences") or [])
        }
        want = 0
        for rjob in spec.get("replicatedJobs") or []:
            replicas = int(rjob.get("replicas", 1))
            for index in range(replicas):
                want += 1
                job_name = f"{name}-{rjob['name']}-{index}"
                if job_name in children:
                    continue
                tmpl = copy.deepcopy(rjob["template"])
                marks = {
                    f"{JOBSET_LABEL}jobset-name": name,
                    f"{JOBSET_LABEL}jobset-uid": meta["uid"],
                    f"{JOBSET_LABEL}replicatedjob-name": rjob["name"],
                    f"{JOBSET_LABEL}replicatedjob-replicas": str(replicas),
                    f"{JOBSET_LABEL}job-index": str(index),
                    f"{JOBSET_LABEL}restart-attempt": "0",
                }
                jmeta = tmpl.get("metadata") or {}
                pod_meta = tmpl["spec"]["template"].setdefault("metadata", {})
                for m in (jmeta, pod_meta):
                    m["labels"] = {**(m.get("labels") or {}), **marks}
                    m["annotations"] = {**(m.get("annotations") or {}), **marks}
                if network.get("enableDNSHostnames"):
                    tmpl["spec"]["template"]["spec"]["subdomain"] = subdomain
                job = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {**jmeta, "name": job_name, "namespace": ns, "ownerReferences": [owner]},
                    "spec": tmpl["spec"],
                }
                await self.sim.put(JOBS, job)
        ended = {
            c["type"]
            for j in children.values()
            for c in (j.get("status") or {}).get("conditions") or []
            if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
        }
        done = sum(
            any(
                c.get("type") == "Complete" and c.get("status") == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
            for j in children.values()
        )
        if "Failed" in ended:
            state, reason, message = "Failed", "FailedJobs", "jobset failed due to one or more job failures"
        elif done >= want:
            state, reason, message = "Completed", "AllJobsCompleted", "jobset completed successfully"
        else:
            return
        t = now_iso()
        cond = {"type": state, "status": "True", "reason": reason, "message": message, "lastTransitionTime": t}
        await self.sim.patch(JOBSETS, ns, name, {"status": {"conditions": [cond], "terminalState": state}})

    async def _finish_job(self, job, type_, reason, message, succeeded=0) -> None:
        t = now_iso()
        cond = {"type": type_, "status": "True", "lastProbeTime": t, "lastTransitionTime": t}
        if reason:
            cond.update(reason=reason, message=message)
        st = {"conditions": [cond], "active": 0}
        if type_ == "Complete":
            st.update(succeeded=succeeded, completionTime=t)
        else:
            st.update(failed=1)
        await self.sim.patch(JOBS, job["metadata"]["namespace"], job["metadata"]["name"], {"status": st})

    async def _create_pod(self, job: dict, index: int = 0) -> None:
        tmpl = copy.deepcopy(job["spec"]["template"])
        meta = tmpl.setdefault("metadata", {})
        name = f"{job['metadata']['name'][:57]}-{uuid.uuid4().hex[:5]}"
        labels = meta.setdefault("labels", {})
        labels.update({"job-name": job["metadata"]["name"], "controller-uid": job["metadata"]["uid"]})
        labels["batch.kubernetes.io/job-name"] = job["metadata"]["name"]
        if job["spec"].get("completionMode") == "Indexed":
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            meta.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(index)
            tmpl["spec"]["hostname"] = f"{job['metadata']['name']}-{index}"
        port = free_port()  # each pod its own metrics port (they all share 127.0.0.1 here)
        meta.setdefault("annotations", {})["trainbench.dev/metrics-port"] = str(port)
        for c in tmpl["spec"]["containers"]:
            for p in c.get("ports") or []:
                if p.get("name") == "metrics":
                    p["containerPort"] = port
            cmd = c.get("command") or []
            for i, arg in enumerate(cmd[:-1]):
                if arg == "--metrics-port":
                    cmd[i + 1] = str(port)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **meta,
                "name": name,
                "namespace": job["metadata"]["namespace"],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job["metadata"]["name"],
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": tmpl["spec"],
            "status": {"phase": "Pending", "conditions": []},
        }
        await self.sim.put(PODS, pod)

    def _node_for(self, pod: dict) -> dict | None:
        want = pod["spec"].get("nodeSelector") or {}
        tolerated = {t.get("key") for t in pod["spec"].get("tolerations") or []}
        for node in self.nodes:
            labels = node["metadata"].get("labels") or {}
            taints = (node.get("spec") or {}).get("taints") or []
            if all(labels.get(k) == v for k, v in want.items()) and all(t["key"] in tolerated for t in taints):
                return node
        return None

    async def _pod(self, pod: dict) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        if not pod["spec"].get("nodeName"):
            node = self._node_for(pod)
            if node is None:
                if not any(c.get("reason") == "Unschedulable" for c in status.get("conditions") or []):
                    n = len(self.nodes)
                    msg = f"0/{n} nodes are available: {n} node(s) didn't match Pod's node affinity/selector."
                    cond = {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": msg,
                        "lastTransitionTime": now_iso(),
                    }
                    await self.sim.patch(PODS, ns, name, {"status": {"conditions": [cond]}})
                return
            t = now_iso()
            await self.sim.patch(
                PODS,
                ns,
                name,
                {
                    "spec": {"nodeName": node["metadata"]["name"]},
                    "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": t}]},
                },
            )
            return
        if uid not in self.procs:
            image = pod["spec"]["containers"][0].get("image", "")
            if image.startswith(MISSING_IMAGE_PREFIX):  # a registry that does not have it
                waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
                if status.get("containerStatuses") is None:
                    c = pod["spec"]["containers"][0]
                    cs = {"name": c["name"], "image": image, "imageID": "", "ready": False, "restartCount": 0}
                    cs["state"] = {"waiting": waiting}
                    await self.sim.patch(PODS, ns, name, {"status": {"containerStatuses": [cs]}})
                return
            await self._start(pod)
            return
        info = self.procs[uid]
        proc = info["proc"]
        if proc.returncode is None and info["limit"] and _rss(proc.pid) > info["limit"]:
            proc.kill()
            await proc.wait()
            info["oom"] = True
        if proc.returncode is not None:
            await self._terminated(pod, info)

    async def _start(self, pod: dict) -> None:
        meta = pod["metadata"]
        c = pod["spec"]["containers"][0]
        d = Path(tempfile.mkdtemp(prefix=f"{meta['name'][:40]}-", dir=self.workdir))
        term, logf = d / "termination-log", d / "log"
        env = {
            k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
        }
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            path = (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath", "")
            if path == "spec.nodeName":
                env[e["name"]] = pod["spec"]["nodeName"]
            elif m := re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path):
                env[e["name"]] = (meta.get(m.group(1)) or {}).get(m.group(2), "")
        if int(env.get("PET_NNODES", "1")) > 1:  # the headless Service's DNS name of index 0, on this machine
            addr = env.get("PET_MASTER_ADDR", "")
            if not self._resolves(meta["namespace"], addr):
                await self._fail_unstarted(pod, f"kubesim DNS: the rendezvous address {addr!r} does not resolve")
                return
            owner = next(o["uid"] for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job")
            env["PET_MASTER_ADDR"] = "127.0.0.1"
            env["PET_MASTER_PORT"] = str(self.rdzv_ports.setdefault(owner, free_port()))
        argv = translate_command(c, sys.executable, term, env)
        limits = (c.get("resources") or {}).get("limits") or {}
        env["OMP_NUM_THREADS"] = str(
            max(
                1,
                int(
                    float(str(limits.get("cpu", "1")).rstrip("m"))
                    // (1000 if str(limits.get("cpu", "")).endswith("m") else 1)
                    or 1
                ),
            )
        )
        with open(logf, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=d
            )
        self.sim.logs[(meta["namespace"], meta["name"])] = logf
        self.procs[meta["uid"]] = {
            "proc": proc,
            "log": logf,
            "term": term,
            "limit": _parse_quantity(limits.get("memory")),
            "oom": False,
            "started": now_iso(),
            "killed": None,
        }
        t = now_iso()
        await self.sim.patch(
            PODS,
            meta["namespace"],
            meta["name"],
            {
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "hostIP": "127.0.0.1",
                    "startTime": t,
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c["image"],
                            "imageID": f"docker-pullable://{c['image']}",
                            "containerID": f"sim://{pod['metadata']['uid']}",
                            "ready": True,
                            "restartCount": 0,
                            "state": {"running": {"startedAt": t}},
                        }
                    ],
                }
            },
        )

    def _resolves(self, ns: str, addr: str) -> bool:
        """Cluster DNS for `<hostname>.<subdomain>`: a headless Service `<subdomain>` in the namespace and a pod
        with that hostname and subdomain (ready or not: the Services here publish not-ready addresses)."""
        host, _, subdomain = addr.partition(".")
        svc = self.sim.find(SERVICES, ns, subdomain) if subdomain else None
        if svc is None or (svc.raw.get("spec") or {}).get("clusterIP") != "None":
            return False
        return any(
            p["spec"].get("hostname") == host and p["spec"].get("subdomain") == subdomain
            for p in self.sim.live(PODS, ns)
        )

    async def _fail_unstarted(self, pod: dict, message: str) -> None:
        """The container exits at once with code 1 and `message` (what the process would have printed)."""
        c, t = pod["spec"]["containers"][0], now_iso()
        term = {"exitCode": 1, "reason": "Error", "startedAt": t, "finishedAt": t, "message": message}
        cs = {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0, "state": {"terminated": term}}
        status = {"phase": "Failed", "podIP": "127.0.0.1", "containerStatuses": [cs]}
        await self.sim.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], {"status": status})

    async def _kill(self, pod: dict, reason: str) -> None:
        info = self.procs.get(pod["metadata"]["uid"])
        if info and info["proc"].returncode is None:
            info["killed"] = reason
            info["proc"].send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(info["proc"].wait(), 5)
            except asyncio.TimeoutError:
                info["proc"].kill()
                await info["proc"].wait()
            await self._terminated(pod, info)

    async def _terminated(self, pod: dict, info: dict) -> None:
        rc = info["proc"].returncode
        code = 128 - rc if rc < 0 else rc  # a signal: 128 + signal number, as a container runtime reports
        reason = "OOMKilled" if info["oom"] else ("Completed" if code == 0 else "Error")
        if info.get("killed"):
            reason = info["killed"]
        message = info["term"].read_text(errors="replace") if info["term"].exists() else ""
        if len(message.encode()) > 4096:
            # what the trainer itself writes to /dev/termination-log (4 KiB; per-step lists dropped first)
            from trainbench.trainer.bench import for_termination_log

            message = for_termination_log(json.loads(message))
        policy = pod["spec"]["containers"][0].get("terminationMessagePolicy")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            lines = info["log"].read_text(errors="replace").splitlines()[-80:]
            message = "\n".join(lines)[-2048:]
        term = {"exitCode": code, "reason": reason, "startedAt": info["started"], "finishedAt": now_iso()}
        if message:
            term["message"] = message
        c = pod["spec"]["containers"][0]
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"docker-pullable://{c['image']}",
                    "containerID": f"sim://{pod['metadata']['uid']}",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": term},
                }
            ],
        }
        await self.sim.patch(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], {"status": status})

    async def shutdown(self) -> None:
        for info in self.procs.values():
            if info["proc"].returncode is None:
                info["proc"].kill()
                await info["proc"].wait()


# --- the whole thing in a background thread ------------------------------------------------------------------


class Cluster:
    """KubeSim + controllers served on 127.0.0.1:<free port> in a background thread; `kubeconfig` for clients."""

    def __init__(
        self, workdir: Path, nodes: list[dict] | None = None, crds: list[dict] | None = None, jobset: bool = False
    ):
        self.jobset = jobset  # serve the JobSet API (and run its controller)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.crds = crds if crds is not None else [yaml.safe_load(CRD_PATH.read_text())]
        self.nodes = nodes if nodes is not None else []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0
        self.sim: KubeSim | None = None
        self.controllers: Controllers | None = None
        self._thread = threading.Thread(target=self._main, name="kubesim", daemon=True)

    def __enter__(self) -> Cluster:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the emulated cluster did not start")
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "sim", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
                    "users": [{"name": "sim", "user": {"token": "test"}}],
                    "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim", "namespace": "default"}}],
                    "current-context": "sim",
                }
            )
        )
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.sim = KubeSim(self.crds, jobset=self.jobset)
        async with self.sim, kmock.Server(self.sim) as server:
            self.port = server.port
            self.controllers = Controllers(self.sim, self.nodes, self.workdir)
            await self.controllers.setup()
            task = asyncio.create_task(self.controllers.run())
            self._ready.set()
            await self._stop.wait()
            task.cancel()
            await self.controllers.shutdown()

    def call(self, coro, timeout: float = 30):
        """Run a coroutine on the cluster's loop from a test thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def objects(self, group: str, version: str, plural: str, namespace: str | None = None) -> list[dict]:
        res = kmock.resource(group, version, plural)

        async def get():
            return copy.deepcopy(self.sim.live(res, namespace))

        return self.call(get())
