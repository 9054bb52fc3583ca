"""Fixtures for the CLI tests: the installed `trainbench` entry point run as a real subprocess, the operator
tests' emulated cluster (tests/operator/kubesim) and real git servers on loopback (gitserver.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
OPERATOR_TESTS = HERE.parent / "operator"
for p in (HERE, OPERATOR_TESTS):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from clihelpers import Trainbench  # noqa: E402
from gitserver import GitDaemon, GitHttpServer  # noqa: E402
from kubesim import Cluster  # noqa: E402
from ophelpers import NODES, Kubectl, Operator  # noqa: E402
from resultsdata import current, fx  # noqa: E402,F401 - fixtures


@pytest.fixture
def tb(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return Trainbench(home)


@pytest.fixture
def cluster(tmp_path):
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is not installed (make tools)")
    with Cluster(tmp_path / "cluster", nodes=NODES) as c:
        yield c


@pytest.fixture
def ktb(tmp_path, cluster):
    """trainbench pointed at the emulated cluster through KUBECONFIG."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return Trainbench(home, cluster.kubeconfig)


@pytest.fixture
def kubectl(cluster):
    return Kubectl(cluster.kubeconfig)


@pytest.fixture
def operator(cluster, tmp_path):
    op = Operator(cluster.kubeconfig, tmp_path)
    yield op
    op.stop()


@pytest.fixture
def git_daemon(tmp_path):
    root = tmp_path / "git"
    root.mkdir()
    d = GitDaemon(root)
    yield d
    d.stop()


@pytest.fixture
def git_http(tmp_path):
    root = tmp_path / "githttp"
    root.mkdir()
    s = GitHttpServer(root, "bench-bot", "s3cr3t-t0ken")
    yield s
    s.stop()
