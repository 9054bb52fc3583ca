"""The chart's PrometheusRule through the real promtool: `check rules` and `test rules` (rules_test.yaml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
CI_VALUES = HERE.parents[1] / "charts" / "trainbench" / "ci" / "nightly-values.yaml"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(not PROMTOOL, reason="promtool (Debian package prometheus) is not installed")


def _write(tmp_path: Path, groups: dict) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")


@pytest.fixture(scope="module")
def groups(render) -> dict:
    docs = render(yaml.safe_load(CI_VALUES.read_text()))
    return docs.one("PrometheusRule")["spec"]


def _promtool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules(tmp_path, groups):
    _write(tmp_path, groups)
    out = _promtool(tmp_path, "check", "rules", "rules.yaml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    names = {r["alert"] for g in groups["groups"] for r in g["rules"]}
    assert names == {
        "TrainbenchRegressionDetected",
        "TrainbenchCaseFailed",
        "TrainbenchRunFailed",
        "TrainbenchRunMissing",
        "TrainbenchChangePoint",
    }


def test_alerts_fire_when_they_should_and_stay_quiet_otherwise(tmp_path, groups):
    _write(tmp_path, groups)
    out = _promtool(tmp_path, "test", "rules", "rules_test.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rule_tests_can_fail(tmp_path, groups):
    """Without the lookback guard, the old run's regression fires too and promtool reports it."""
    broken = yaml.safe_load(yaml.safe_dump(groups))
    for rule in broken["groups"][0]["rules"]:
        if rule.get("alert") == "TrainbenchRegressionDetected":
            rule["expr"] = rule["expr"].split("unless")[0]
    _write(tmp_path, broken)
    out = _promtool(tmp_path, "test", "rules", "rules_test.yaml")
    assert out.returncode != 0
    assert 'run="nightly-0"' in out.stdout + out.stderr
