"""A real Kubernetes CRD API server for the tests: etcd + apiextensions-apiserver (Kubernetes 1.36, the code
kube-apiserver runs for CRDs: structural schema, defaulting, pruning, CEL by cel-go, status subresource, Table
printing), started by `start-crd-server.sh` from the shared tools folder (../shared/tools/README.md).

The tools are found in $TRAINBENCH_CRD_TOOLS, else ../shared/tools next to the repository. It serves CRDs and
custom resources only (no namespaces, Jobs or Pods); namespace "default" works without creating it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import requests
import urllib3
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS_ENV = "TRAINBENCH_CRD_TOOLS"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def tools_dir() -> Path:
    return Path(os.environ.get(TOOLS_ENV) or REPO.parent / "shared" / "tools")


def missing_tools() -> str | None:
    """Why the server cannot start here (None: it can)."""
    tools = tools_dir()
    absent = [n for n in ("start-crd-server.sh", "etcd", "apiextensions-apiserver") if not (tools / n).exists()]
    if absent:
        return f"the real CRD API server's binaries are absent ({', '.join(absent)} not in {tools}; set ${TOOLS_ENV})"
    return None


def start_server(workdir: Path) -> CrdServer:
    """A started server; the test is skipped, saying why, only where the binaries are absent."""
    why = missing_tools()
    if why:
        pytest.skip(why)
    return CrdServer(workdir)


class CrdServer:
    """One etcd + apiextensions-apiserver on free loopback ports, spoken to over HTTPS with the client cert."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        out = subprocess.run(
            [str(tools_dir() / "start-crd-server.sh"), str(self.workdir)], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"start-crd-server.sh failed: {out.stderr.strip()}")
        self.kubeconfig = Path(out.stdout.strip().splitlines()[-1])
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        user = config["users"][0]["user"]
        self.http = requests.Session()
        self.http.cert = (user["client-certificate"], user["client-key"])

    def stop(self) -> None:
        pids = (self.workdir / "pids").read_text().split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
        for pid in pids:  # reap: wait until each is gone
            for _ in range(100):
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)

    # -- plain HTTPS -------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, **kwargs) -> requests.Response:
        # the serving certificate is self-signed (--cert-dir); per request: a session-level verify=False loses to
        # $REQUESTS_CA_BUNDLE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return self.http.request(method, self.url + path, json=body, timeout=30, verify=False, **kwargs)

    def install_crd(self, crd: dict) -> dict:
        """Create the CRD (raise with the server's message when refused) and wait until it is Established."""
        r = self.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        if r.status_code != 201:
            raise AssertionError(f"the CRD was refused ({r.status_code}): {r.json().get('message')}")
        name = crd["metadata"]["name"]
        for _ in range(200):
            got = self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
            conds = {c["type"]: c["status"] for c in (got.get("status") or {}).get("conditions") or []}
            if conds.get("Established") == "True":
                group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
                plural = crd["spec"]["names"]["plural"]
                # the resource answers once its handler is installed (shortly after Established)
                for _ in range(100):
                    if self.request("GET", f"/apis/{group}/{version}/namespaces/default/{plural}").status_code == 200:
                        return got
                    time.sleep(0.1)
            time.sleep(0.1)
        raise AssertionError(f"CRD {name} did not become Established: {got.get('status')}")
