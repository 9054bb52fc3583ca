"""Shared fixtures for the chart tests: the real Helm engine (helm-python-sdk) renders the chart."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trainbench"
RELEASE, NAMESPACE = "trainbench", "trainbench"


class Rendered(list):
    """The rendered objects of one release (a list of dicts), with lookups."""

    def kinds(self, kind: str) -> list[dict]:
        return [d for d in self if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [d for d in self.kinds(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
        return found[0]


@pytest.fixture(scope="session")
def chart():
    helm = pytest.importorskip("helm_python")
    return helm.Chart.load(str(CHART))


@pytest.fixture(scope="session")
def render(chart):
    def _render(values: dict | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
        out = chart.render(values or {}, name=name, namespace=namespace)
        docs = Rendered()
        for path, text in sorted(out.items()):
            if path.endswith("NOTES.txt"):
                continue
            docs.extend(d for d in yaml.safe_load_all(text) if d)
        return docs

    return _render
