"""Fixtures for the operator tests: an emulated cluster (tests/operator/kubesim.py), kubectl, the operator.
The helpers live in ophelpers.py (tests import them from there, not from this conftest)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from kubesim import Cluster  # noqa: E402
from ophelpers import NODES, Kubectl, Operator  # noqa: E402
from resultsdata import baseline_results, current, fx, history_doc  # noqa: E402,F401 - fixtures


@pytest.fixture
def cluster(tmp_path):
    if os.environ.get("KUBECONFIG") and os.environ.get("TRAINBENCH_TEST_CLUSTER"):
        pytest.skip("the emulated cluster is not used when TRAINBENCH_TEST_CLUSTER is set")
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is not installed (make tools)")
    with Cluster(tmp_path / "cluster", nodes=NODES) as c:
        yield c


@pytest.fixture
def kubectl(cluster):
    return Kubectl(cluster.kubeconfig)


@pytest.fixture
def operator(cluster, tmp_path):
    op = Operator(cluster.kubeconfig, tmp_path)
    yield op
    op.stop()
