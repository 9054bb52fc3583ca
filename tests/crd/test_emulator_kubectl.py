"""kubectl against the emulated cluster (tests/operator/kubesim) behaves as against a real API server for what
tests/crd/test_real_server.py found: kubectl's default validation sends fieldValidation=Strict and unknown fields
are refused with the server's message; `--validate=false` prunes them; refusals name the field."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from cases import GOOD, UNKNOWN_FIELDS, run
from kubesim import Cluster, SchemaValidator

from trainbench.operator.crd import crd


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory):
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is not installed (make tools)")
    with Cluster(tmp_path_factory.mktemp("cluster")) as cluster:

        def kubectl(*args, manifest: dict | None = None):
            return subprocess.run(
                ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args],
                input=yaml.safe_dump(manifest) if manifest else None,
                capture_output=True,
                text=True,
                timeout=60,
            )

        yield kubectl


@pytest.mark.parametrize(("name", "spec", "field"), UNKNOWN_FIELDS, ids=[c[0] for c in UNKNOWN_FIELDS])
def test_unknown_fields_are_refused_by_default_and_pruned_without_validation(kubectl, name, spec, field):
    refused = kubectl("apply", "-f", "-", manifest=run(spec, name=name))
    assert refused.returncode != 0
    assert f'strict decoding error: unknown field "{field}"' in refused.stderr, refused.stderr
    assert kubectl("get", "br", name).returncode != 0  # nothing stored
    pruned = kubectl("apply", "--validate=false", "-f", "-", manifest=run(spec, name=name))
    assert pruned.returncode == 0, pruned.stderr
    stored = yaml.safe_load(kubectl("get", "br", name, "-o", "yaml").stdout)
    assert stored["spec"] != spec and SchemaValidator(crd()).unknown_fields(stored) == [], stored


def test_an_update_with_an_unknown_field_is_refused(kubectl):
    assert kubectl("apply", "-f", "-", manifest=run(GOOD, name="update-me")).returncode == 0
    changed = kubectl("apply", "-f", "-", manifest=run({**GOOD, "steps": 3, "stepz": 4}, name="update-me"))
    assert changed.returncode != 0 and 'unknown field "spec.stepz"' in changed.stderr, changed.stderr
    assert kubectl("apply", "-f", "-", manifest=run({**GOOD, "steps": 3}, name="update-me")).returncode == 0
    assert yaml.safe_load(kubectl("get", "br", "update-me", "-o", "yaml").stdout)["spec"]["steps"] == 3


def test_schema_refusals_name_the_field(kubectl):
    out = kubectl("apply", "-f", "-", manifest=run({"matrix": {"models": ["m"]}}, name="no-pools"))
    assert out.returncode != 0 and "spec.pools: Required value" in out.stderr, out.stderr
