"""Smoke tests of the built container images (images/build.sh; `make images-test` builds and runs them).

The images to test are the ones build/images.json names (images/build.sh writes it; TRAINBENCH_IMAGES_JSON
points elsewhere), run with the engine that built them and its CONTAINERS_CONF. Skipped, with the reason, where
no image was built or the engine is absent: `make test` alone does not build images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = Path(os.environ.get("TRAINBENCH_IMAGES_JSON", ROOT / "build" / "images.json"))
HOW = "build them with `make images-test` (CI) or `make images BASE=local`"


@dataclass(frozen=True)
class Engine:
    """podman (or docker) as images/build.sh used it."""

    exe: str
    containers_conf: str | None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.containers_conf:
            env["CONTAINERS_CONF"] = self.containers_conf
        return env

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.exe, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{self.exe} {' '.join(args)} -> rc {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def inspect(self, ref: str) -> dict:
        return json.loads(self("image", "inspect", ref).stdout)[0]


@pytest.fixture(scope="session")
def built() -> dict:
    if not MANIFEST.exists():
        pytest.skip(
            f"no images built ({MANIFEST.relative_to(ROOT) if MANIFEST.is_relative_to(ROOT) else MANIFEST} is absent): {HOW}"
        )
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="session")
def engine(built) -> Engine:
    exe = shutil.which(built["engine"])
    if not exe:
        pytest.skip(f"{built['engine']}, which built the images, is not installed here")
    conf = built.get("containers_conf")
    return Engine(exe, conf if conf and Path(conf).exists() else None)


def _image(built: dict, engine: Engine, name: str) -> str:
    entry = built["images"].get(name)
    if not entry:
        pytest.skip(f"image {name} was not built: {HOW}")
    if engine("image", "exists" if engine.exe.endswith("podman") else "inspect", entry["ref"], check=False).returncode:
        pytest.skip(f"image {entry['ref']} named in {MANIFEST.name} is gone (removed by `make images-clean`?): {HOW}")
    return entry["ref"]


@pytest.fixture(scope="session")
def operator_image(built, engine) -> str:
    return _image(built, engine, "operator")


@pytest.fixture(scope="session")
def trainer_image(built, engine) -> str:
    return _image(built, engine, "trainer-cpu")


@pytest.fixture(scope="session")
def chart_deployment() -> dict:
    """The operator Deployment the chart renders with its default values (the real Helm engine)."""
    helm = pytest.importorskip("helm_python")
    import yaml

    out = helm.Chart.load(str(ROOT / "charts" / "trainbench")).render({}, name="trainbench", namespace="trainbench")
    docs = [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    return dep
