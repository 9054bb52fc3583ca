"""BenchmarkRuns the CRD tests share."""

from __future__ import annotations

import copy
import uuid

from trainbench.operator import api

GOOD = {"pools": [{"name": "a"}], "matrix": {"models": ["tiny-qwen3"]}}


def run(spec: dict, name: str | None = None) -> dict:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name or f"t-{uuid.uuid4().hex[:10]}"},
        "spec": copy.deepcopy(spec),
    }


UNKNOWN_FIELDS = [  # (name, spec, the unknown field): refused under Strict, pruned otherwise
    ("unknown-top", {**GOOD, "stepz": 3}, "spec.stepz"),
    ("unknown-matrix", {**GOOD, "matrix": {"models": ["tiny-qwen3"], "seqLen": [128]}}, "spec.matrix.seqLen"),
    ("unknown-pool", {**GOOD, "pools": [{"name": "a", "gpus": 8}]}, "spec.pools[0].gpus"),
    ("unknown-engine", {**GOOD, "multiNode": {"engin": "JobSet"}}, "spec.multiNode.engin"),
]
