"""The Dockerfiles in images/, checked by parsing (hadolint is not packaged). CI also builds and runs the operator
and trainer-cpu images (images/build.sh, tests/images/); the GPU images need their upstream bases and are only
parsed here.

Parsed with PyPI `dockerfile` (Docker's own Go parser). Checks: pinned bases and pip versions, a non-root
final USER, the package installed from the repository, OCI labels (revision and creation date from build
arguments, also in the TRAINBENCH_IMAGE_* environment), pinned versions as labels, the build arguments
images/build.sh passes, and entrypoints that exist in the `trainbench` command.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = sorted((ROOT / "images").glob("*/Dockerfile"))
OCI_LABELS = ("title", "description", "source", "licenses", "version", "revision", "created")
FAMILIES = {
    "trainer-cuda-hopper",
    "trainer-cuda-blackwell",
    "trainer-cuda-ampere",
    "trainer-rocm",
    "trainer-cpu",
    "operator",
}

dockerfile = pytest.importorskip("dockerfile", reason="PyPI `dockerfile` (dev extra) parses the Dockerfiles")


def _stages(path: Path):
    """[(base image with ARG defaults substituted, stage alias, [commands])], global ARG defaults."""
    cmds = dockerfile.parse_file(str(path))
    args: dict[str, str] = {}
    stages = []
    for cmd in cmds:
        if cmd.cmd == "ARG" and not stages:
            name, _, default = cmd.value[0].partition("=")
            args[name] = default
        elif cmd.cmd == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), cmd.value[0])
            alias = cmd.value[2].lower() if len(cmd.value) > 2 else None
            stages.append((image, alias, []))
        elif stages:
            stages[-1][2].append(cmd)
    return stages, args


def _pip_installs(run_line: str) -> list[list[str]]:
    """The arguments of each `pip install` / `pip wheel` in a RUN line (shell operators split commands)."""
    lex = shlex.shlex(run_line.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands, current = [], []
    for tok in lex:
        if tok in ("&&", "||", ";", "|", "(", ")"):
            commands.append(current)
            current = []
        else:
            current.append(tok)
    commands.append(current)
    out = []
    for toks in commands:
        while toks and re.match(r"[A-Za-z_]\w*=(?!=)", toks[0]):  # leading VAR=value assignments
            toks = toks[1:]
        for i in range(len(toks) - 1):
            if toks[i].endswith("pip") and toks[i + 1] in ("install", "wheel"):
                out.append(toks[i + 2 :])
    return out


def test_every_family_has_an_image():
    assert {p.parent.name for p in IMAGES} == FAMILIES


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_bases_are_pinned(path):
    stages, _ = _stages(path)
    aliases = set()
    for image, alias, _cmds in stages:
        if image.lower() in aliases:
            continue
        assert "$" not in image, f"unresolved ARG in FROM {image}"
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"{path.parent.name}: base {image} is not pinned to a version"
        assert re.search(r"\d+\.\d+", tag) or "@sha256:" in image, f"{image}: tag {tag!r} names no version"
        if alias:
            aliases.add(alias)


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_pip_installs_are_pinned_and_the_package_comes_from_the_repo(path):
    stages, args = _stages(path)
    all_cmds = [c for _, _, cmds in stages for c in cmds]
    for c in all_cmds:  # ARGs declared in a stage with a default (images pin their versions there)
        if c.cmd == "ARG" and "=" in c.value[0]:
            name, _, default = c.value[0].partition("=")
            args.setdefault(name, default)
    copies = [c.value for c in all_cmds if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert [".", "/src"] in [list(v) for v in copies], "the repository is not copied into the build"
    installed_src = False
    for cmd in all_cmds:
        if cmd.cmd != "RUN":
            continue
        for pip_args in _pip_installs(" ".join(cmd.value)):
            skip_next = False
            for tok in pip_args:
                if skip_next:
                    skip_next = False
                    continue
                if tok in ("--index-url", "--extra-index-url", "-w", "--constraint", "-c", "--find-links", "-f"):
                    skip_next = True
                    continue
                if tok.startswith("-"):
                    continue
                if tok.startswith("/src"):
                    installed_src = True
                    continue
                if tok.startswith("/wheels/") or tok == ".":  # wheels built from a pinned git tag
                    continue
                spec = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), tok)
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", spec), f"{path.parent.name}: unpinned {tok}"
    assert installed_src, f"{path.parent.name}: the trainbench package is not installed from the repository"
    ignore = (path.parent / "Dockerfile.dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!src/", "!operator/", "!trainer/"):
        assert needed in ignore, f"{path.parent.name}: the build context leaves out {needed[1:]}"


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_final_stage_runs_as_non_root_with_oci_labels(path):
    stages, _ = _stages(path)
    _image, _alias, final = stages[-1]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, f"{path.parent.name}: the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{path.parent.name}: runs as {user}"
    labels = {}
    for c in final:
        if c.cmd == "LABEL":
            labels.update((k, v.strip('"')) for k, v in zip(c.value[::2], c.value[1::2], strict=True))
    for key in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{path.parent.name}: no OCI label {key}"
    assert labels["org.opencontainers.image.title"] == f"trainbench-{path.parent.name}"


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_entrypoint_is_a_trainbench_subcommand(path):
    from trainbench import cli

    stages, _ = _stages(path)
    final = stages[-1][2]
    (entry,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    (cmd,) = [c for c in final if c.cmd == "CMD"]
    assert entry.json and list(entry.value) == ["trainbench"], "exec-form ENTRYPOINT [trainbench]"
    assert cmd.json
    sub = cmd.value[0]
    # the subcommand exists in the dispatch table and its module is importable from the package
    table = _commands(cli)
    assert sub in table, f"{path.parent.name}: `trainbench {sub}` is not a command ({', '.join(table)})"
    assert importlib.util.find_spec(table[sub]) is not None, table[sub]
    expected = "operator" if path.parent.name == "operator" else "bench"
    assert sub == expected


def _commands(cli) -> dict[str, str]:
    """The `trainbench` dispatch table: cli.COMMANDS (name -> (module, description)), or in older versions a
    local dict in cli.main's source."""
    import ast
    import inspect

    if hasattr(cli, "COMMANDS"):
        return {name: entry[0] if isinstance(entry, tuple) else entry for name, entry in cli.COMMANDS.items()}

    tree = ast.parse(inspect.getsource(cli.main))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "commands":
            return ast.literal_eval(node.value)
    raise AssertionError("no commands table in trainbench.cli.main")


def test_the_checks_catch_bad_dockerfiles(tmp_path):
    """The parsing helpers see an unpinned base, an unpinned pip install and a root user."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "ARG BASE=python:latest\nFROM ${BASE} AS build\n"
        'RUN pip install requests "torch==2.13.0" --index-url https://x && MAX_JOBS=2 pip install /src\n'
        "FROM build\nUSER root\n"
    )
    stages, _ = _stages(bad)
    assert [s[0] for s in stages] == ["python:latest", "build"]
    assert stages[0][1] == "build"
    (run,) = [c for c in stages[0][2] if c.cmd == "RUN"]
    assert _pip_installs(" ".join(run.value)) == [["requests", "torch==2.13.0", "--index-url", "https://x"], ["/src"]]
    with pytest.raises(AssertionError, match="not pinned"):
        test_bases_are_pinned(bad)
    with pytest.raises(AssertionError, match="runs as root"):
        test_final_stage_runs_as_non_root_with_oci_labels(bad)


def _final_args_labels_env(path: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The final stage's ARG defaults (global defaults for ARGs re-declared without one), LABELs and ENV."""
    stages, global_args = _stages(path)
    args: dict[str, str] = {}
    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    for c in stages[-1][2]:
        if c.cmd == "ARG":
            name, eq, default = c.value[0].partition("=")
            args[name] = default if eq else global_args.get(name, "")
        elif c.cmd == "LABEL":
            labels.update((k, v.strip('"')) for k, v in zip(c.value[::2], c.value[1::2], strict=True))
        elif c.cmd == "ENV":
            env.update((k, v.strip('"')) for k, v in zip(c.value[::2], c.value[1::2], strict=True))
    return args, labels, env


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_provenance_comes_from_build_args_as_labels_and_environment(path):
    """images/build.sh passes VERSION, REVISION (git commit) and CREATED (build time); the provenance of a result
    (issue 15) reads them from the image's labels and the trainer's environment."""
    args, labels, env = _final_args_labels_env(path)
    for arg, label, var in (
        ("VERSION", "version", "TRAINBENCH_IMAGE_VERSION"),
        ("REVISION", "revision", "TRAINBENCH_IMAGE_REVISION"),
        ("CREATED", "created", "TRAINBENCH_IMAGE_CREATED"),
    ):
        assert arg in args, f"{path.parent.name}: the final stage does not declare ARG {arg}"
        assert labels[f"org.opencontainers.image.{label}"] == f"${{{arg}}}", f"{path.parent.name}: label {label}"
        assert env.get(var) == f"${{{arg}}}", f"{path.parent.name}: ENV {var} is not ${{{arg}}}"
    assert env["TRAINBENCH_IMAGE_TITLE"] == labels["org.opencontainers.image.title"]


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_pinned_versions_are_labels(path):
    """Each trainer image labels the torch/transformers/peft (and flash-attn) it installs, from the same pinned
    ARG the install uses: a label re-declared in the final stage carries the build stage's default."""
    stages, global_args = _stages(path)
    args, labels, _ = _final_args_labels_env(path)
    declared: dict[str, set[str]] = {}
    for _image, _alias, cmds in stages:
        for c in cmds:
            if c.cmd == "ARG":
                name, eq, default = c.value[0].partition("=")
                declared.setdefault(name, set()).add(default if eq else global_args.get(name, ""))
    pins = {k[len("dev.trainbench.") :]: v for k, v in labels.items() if k.startswith("dev.trainbench.")}
    if path.parent.name.startswith("trainer-"):
        for pkg in ("torch", "transformers", "peft"):
            assert f"{pkg}.version" in pins, f"{path.parent.name}: no label dev.trainbench.{pkg}.version"
        if "cuda" in path.parent.name:
            assert any(k.startswith("flash-attn") for k in pins), f"{path.parent.name}: no flash-attn label"
    for key, value in pins.items():
        m = re.fullmatch(r"\$\{(\w+)\}", value)
        if not m:
            continue
        arg = m.group(1)
        if key.endswith((".version", ".ref")):
            assert re.fullmatch(r"v?\d[\w.]*", args[arg]), (
                f"{path.parent.name}: {key}: {arg}={args[arg]!r} is no version"
            )
        assert declared[arg] == {args[arg]}, f"{path.parent.name}: ARG {arg} has different defaults {declared[arg]}"


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_build_args_that_images_build_sh_passes(path):
    """Every image takes this host's pip settings (images/host_pip.py); the two CI builds on the local base
    take BASE_IMAGE and PYTHON; images with torch take TORCH_INDEX (and trainer-cpu TORCH_WHEELS)."""
    stages, global_args = _stages(path)
    declared = set(global_args)
    for _image, _alias, cmds in stages:
        declared |= {c.value[0].partition("=")[0] for c in cmds if c.cmd == "ARG"}
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT"):
        assert arg in declared, f"{path.parent.name}: no ARG {arg}"
    name = path.parent.name
    if name in ("operator", "trainer-cpu"):
        assert {"BASE_IMAGE", "PYTHON"} <= declared
        assert stages[0][0] == global_args["BASE_IMAGE"]
    if name.startswith("trainer-"):
        assert "TORCH_INDEX" in declared and "TORCH_VERSION" in declared
    if name == "trainer-cpu":
        assert "TORCH_WHEELS" in declared


def test_build_script_knows_every_image():
    """`make images` builds what images/ holds; BASE=local builds exactly the images tests/images runs."""
    script = (ROOT / "images" / "build.sh").read_text()
    assert re.search(r'^LOCAL_IMAGES="operator trainer-cpu"$', script, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert "images/build.sh build operator trainer-cpu" in makefile


def _host_pip():
    spec = importlib.util.spec_from_file_location("host_pip", ROOT / "images" / "host_pip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_host_pip_settings_become_build_args_and_read_only_mounts(tmp_path):
    """images/host_pip.py: `pip config list` -> --build-arg PIP_*=... and -v PATH:PATH:ro for the local paths
    (a `.../simple` index is mounted with its parent, where its files are); constraint is not forwarded."""
    hp = _host_pip()
    (tmp_path / "mirror" / "simple").mkdir(parents=True)
    (tmp_path / "wheels").mkdir()
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    listing = "\n".join(
        [
            f"global.cert='{ca}'",
            "global.constraint='/etc/xdg/pip/constraints.txt'",
            f"global.extra-index-url='file://{tmp_path}/mirror/simple https://mirror.example/simple'",
            "global.find-links='/nonexistent/wheels'",
            f":env:.find-links='{tmp_path}/wheels'",
            ":env:.default-timeout='180'",
            "site.index-url='https://ignored.example'",
        ]
    )
    settings = hp.pip_settings(listing)
    assert settings == {
        "cert": str(ca),
        "extra-index-url": f"file://{tmp_path}/mirror/simple https://mirror.example/simple",
        "find-links": f"{tmp_path}/wheels",  # the environment wins over the file
        "default-timeout": "180",
    }
    args = hp.build_args(settings)
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert ("--build-arg", f"PIP_CERT={ca}") in pairs
    assert ("--build-arg", "PIP_DEFAULT_TIMEOUT=180") in pairs
    assert not any("constraint" in v.lower() for _, v in pairs)
    mounts = sorted(v for f, v in pairs if f == "-v")
    assert mounts == sorted(f"{p}:{p}:ro" for p in (ca, tmp_path / "mirror", tmp_path / "wheels"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.parent.name)
def test_every_dependency_of_the_installed_extras_is_pinned(path):
    """The package goes in with `--no-deps` after its dependencies were installed at pinned versions, so a
    dependency added to pyproject.toml needs its pin in each image (else `pip check` fails the build, or the
    GPU images, which CI does not build, would miss it). This names the missing pin at once."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    stages, args = _stages(path)
    pinned: set[str] = set()
    extras: set[str] = set()
    for _image, _alias, cmds in stages:
        for c in cmds:
            if c.cmd != "RUN":
                continue
            for pip_args in _pip_installs(" ".join(c.value)):
                for tok in pip_args:
                    if tok.startswith("/src["):
                        extras |= set(tok[len("/src[") : tok.index("]")].split(","))
                    elif "==" in tok:
                        pinned.add(_norm(tok.split("==")[0]))
    assert extras, f"{path.parent.name}: no /src[extras] install"
    needed = list(project["dependencies"]) + [r for e in sorted(extras) for r in project["optional-dependencies"][e]]
    names = {_norm(re.match(r"[A-Za-z0-9_.\-]+", r).group(0)) for r in needed}
    missing = sorted(names - pinned)
    assert not missing, (
        f"{path.parent.name}: pyproject.toml's {sorted(extras)} need {missing}, which the Dockerfile does not "
        "install at a pinned version: add an ARG <NAME>_VERSION=<version> and the package to its pinned install"
    )
