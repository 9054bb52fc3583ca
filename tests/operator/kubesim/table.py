"""Server-side Table printing (`kubectl get`): the name, the CRD's additionalPrinterColumns, Age."""

from __future__ import annotations

from .common import age, jsonpath


def table(objs: list[dict], columns: list[dict], resource_version: str) -> dict:
    """A meta.k8s.io/v1 Table of `objs` with `columns` (additionalPrinterColumns)."""
    cols = columns
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
            v = jsonpath(o, c["jsonPath"])
            cells.append(age(v) if c["type"] == "date" else v)
        meta = {k: o["metadata"].get(k) for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")}
        rows.append(
            {
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    }
