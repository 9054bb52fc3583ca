"""What the emulator's parts share: time stamps, free ports, merge patches, label selectors, quantities, and the
resources the controllers work on."""

from __future__ import annotations

import copy
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

import jsonpatch
import kmock

REPO = Path(__file__).resolve().parents[3]
CRD_PATH = REPO / "manifests" / "crd.yaml"

JOBS = kmock.resource("batch", "v1", "jobs")
JOBSETS = kmock.resource("jobset.x-k8s.io", "v1alpha2", "jobsets")
SERVICES = kmock.resource("", "v1", "services")
PODS = kmock.resource("", "v1", "pods")
NODES = kmock.resource("", "v1", "nodes")
JOBSET_LABEL = "jobset.sigs.k8s.io/"  # the prefix of the labels and annotations JobSet puts on Jobs and pods
MISSING_IMAGE_PREFIX = "missing.example/"  # images the fake kubelet cannot pull


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def parse_selector(text: str):
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


def jsonpath(obj, path: str):
    value = obj
    for key in path.strip(".").split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    secs = int(time.time() - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())
    return f"{secs}s" if secs < 120 else f"{secs // 60}m"


def apply_patch(obj: dict, patch) -> dict:
    """`obj` with a JSON merge patch (RFC 7386, a dict) or a JSON patch (RFC 6902, a list) applied; a new object."""
    if isinstance(patch, list):
        return jsonpatch.apply_patch(copy.deepcopy(obj), patch, in_place=False)
    return _merge_patch(copy.deepcopy(obj), patch)


def _merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    target = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target


def parse_quantity(q: str | None) -> int | None:
    if not q:
        return None
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        return None
    mult = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    mult["Ti"] = 2**40
    return int(float(m.group(1)) * mult[m.group(2)])
