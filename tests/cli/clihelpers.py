"""Helpers of the CLI tests: the installed `trainbench` entry point as a subprocess, the one-line error check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EXE = Path(sys.executable).parent / "trainbench"


class Trainbench:
    """`trainbench ARGS` as a subprocess of the installed entry point, with a clean cluster environment."""

    def __init__(self, home: Path, kubeconfig: Path | None = None) -> None:
        assert EXE.exists(), f"{EXE}: the venv's trainbench entry point (pip install -e .)"
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "TRAINBENCH_GIT_TOKEN", "GITHUB_TOKEN")}
        env.update(HOME=str(home), PYTHONUNBUFFERED="1")
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        self.env = env

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(EXE), *args], capture_output=True, text=True, env={**self.env, **(env or {})}, timeout=timeout
        )


def one_error(p: subprocess.CompletedProcess, code: int | None = None) -> str:
    """The command failed with exactly one line on stderr and no traceback; that line."""
    assert p.returncode != 0, (p.stdout, p.stderr)
    if code is not None:
        assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and "HTTP response headers" not in p.stderr, p.stderr
    return lines[0]
