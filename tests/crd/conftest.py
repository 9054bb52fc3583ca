"""Fixtures for the CRD tests: a real Kubernetes CRD API server (crd_server.py) with the shipped CRD installed.
tests/operator is put on sys.path for the emulator (kubesim) and the operator suite's bad-input cases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "operator"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from crd_server import start_server  # noqa: E402


@pytest.fixture(scope="session")
def crd_server(tmp_path_factory):
    """One server for the module's tests, with manifests/crd.yaml installed (the chart's copy is the same text)."""
    server = start_server(tmp_path_factory.mktemp("crd-server"))
    try:
        server.install_crd(yaml.safe_load((HERE.parents[1] / "manifests" / "crd.yaml").read_text()))
        yield server
    finally:
        server.stop()
