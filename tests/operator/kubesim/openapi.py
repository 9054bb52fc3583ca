"""OpenAPI v3 discovery of the custom resources, the part kubectl reads."""

from __future__ import annotations

import aiohttp.web


def openapi_v3(crds: dict[tuple, dict], group: str | None, version: str | None) -> aiohttp.web.Response:
    """OpenAPI v3 of the custom resources, as far as kubectl reads it: its default `--validate=strict` checks
    here that PATCH takes `fieldValidation`, then sends fieldValidation=Strict and leaves validation to the
    server (a real server refuses unknown fields then; see `_strict`)."""
    if group is None:
        paths = {f"apis/{g}/{v}": {"serverRelativeURL": f"/openapi/v3/apis/{g}/{v}?hash=0"} for g, v, _ in crds}
        return aiohttp.web.json_response({"paths": paths})
    param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    paths, schemas = {}, {}
    for (g, v, plural), crd in crds.items():
        if (g, v) != (group, version):
            continue
        kind = crd["spec"]["names"]["kind"]
        gvk = {"x-kubernetes-group-version-kind": {"group": g, "version": v, "kind": kind}}
        ns = "/namespaces/{namespace}" if crd["spec"]["scope"] == "Namespaced" else ""
        op = {**gvk, "parameters": [param], "responses": {"200": {"description": "OK"}}}
        paths[f"/apis/{g}/{v}{ns}/{plural}/{{name}}"] = {"parameters": [param], "patch": op, "put": op, "get": op}
        paths[f"/apis/{g}/{v}{ns}/{plural}"] = {"parameters": [param], "post": op}
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        schemas[f"{'.'.join(reversed(g.split('.')))}.{v}.{kind}"] = {**schema, **{k: [w] for k, w in gvk.items()}}
    if not paths:
        return aiohttp.web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
    doc = {"openapi": "3.0.0", "info": {"title": "kubesim", "version": "v1"}, "paths": paths}
    return aiohttp.web.json_response({**doc, "components": {"schemas": schemas}})
