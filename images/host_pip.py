"""This host's pip setup as container-build arguments, one per line (images/build.sh reads them into an array).

A machine behind a PyPI mirror or an intercepting proxy needs its pip settings inside `RUN pip install`: the
index URLs, find-links directories and CA bundle from `pip config list` (files and PIP_* environment). Each
becomes `--build-arg PIP_...=...` (the Dockerfiles declare these ARGs, so they are set only while building and
not in the image's environment), and every local path they name is mounted read-only at the same path
(`podman build -v PATH:PATH:ro`). pip's `constraint` is not forwarded: the images pin their own versions.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

FORWARD = {  # pip option -> the build argument the Dockerfiles declare
    "index-url": "PIP_INDEX_URL",
    "extra-index-url": "PIP_EXTRA_INDEX_URL",
    "find-links": "PIP_FIND_LINKS",
    "cert": "PIP_CERT",
    "default-timeout": "PIP_DEFAULT_TIMEOUT",
    "timeout": "PIP_DEFAULT_TIMEOUT",
}


def pip_settings(config_list: str) -> dict[str, str]:
    """{option: value} from `pip config list` output (`global.cert='/x'`, `:env:.find-links='/y'`); the later
    line wins, as pip's own precedence lists environment after files."""
    out: dict[str, str] = {}
    for line in config_list.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        section, _, option = key.rpartition(".")
        if section not in ("global", "install", ":env:"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if option in FORWARD and value:
            out[option] = value
    return out


def local_path(value: str) -> Path | None:
    """The local directory or file a pip location names (a path or file:// URL; a `.../simple` index is
    mounted with its parent, where such mirrors keep the files the index links to)."""
    url = urlparse(value)
    if url.scheme == "file":
        path = Path(url.path)
    elif url.scheme or not value.startswith("/"):
        return None
    else:
        path = Path(value)
    if not path.exists():
        return None
    if path.name == "simple" and path.is_dir():
        path = path.parent
    return path


def build_args(settings: dict[str, str]) -> list[str]:
    args: list[str] = []
    mounts: list[Path] = []
    for option, value in settings.items():
        args += ["--build-arg", f"{FORWARD[option]}={value}"]
        if option in ("index-url", "extra-index-url", "find-links", "cert"):
            for part in shlex.split(value):
                path = local_path(part)
                if path and path not in mounts:
                    mounts.append(path)
    for path in mounts:
        args += ["-v", f"{path}:{path}:ro"]
    return args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="podman", help="docker build cannot mount: only build args there")
    ns = ap.parse_args(argv)
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0  # no pip here: the build uses PyPI
    args = build_args(pip_settings(listing))
    if ns.engine == "docker":
        # without mounts, only settings that point off this machine make sense inside the build
        keep = []
        for flag, value in zip(args[::2], args[1::2], strict=True):
            if flag == "--build-arg" and not any(local_path(p) for p in shlex.split(value.partition("=")[2])):
                keep += [flag, value]
        args = keep
    print("\n".join(args))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    sys.exit(main())
