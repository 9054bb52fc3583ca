#!/usr/bin/env bash
# Build, push and clean trainbench's container images (podman, or docker where podman is absent).
#
#   images/build.sh build [IMAGE...]   build IMAGEs (default: $IMAGES, else every image the base allows)
#   images/build.sh base               make the local base image only (BASE=local)
#   images/build.sh clean              remove the images this checkout built (build/images.json) and the local base
#
# Settings (environment; `make images` passes its variables through):
#   BASE=upstream|local   upstream: each Dockerfile's own base (python slim, nvidia/cuda, rocm; pulled by the
#                         engine). local: a Debian bookworm base made here with debootstrap and imported, no
#                         registry needed (CI); the images whose base is ARG BASE_IMAGE build on it (by
#                         default operator and trainer-cpu; trainer-cuda-blackwell when named).
#   IMAGES                space-separated names from images/*/ (or "all")
#   REGISTRY TAG          image references REGISTRY/NAME:TAG (default ghcr.io/trainbench, the package version;
#                         BASE=local defaults to localhost/trainbench and TAG dev)
#   PUSH=1                push every image after it is built
#   TORCH_WHEELS=DIR      install torch from the wheels in DIR (mounted read-only into the build), not an index
#   TORCH_INDEX=URL       the index torch comes from (each Dockerfile has its default)
#   HOST_PIP=auto|0       auto: forward this machine's pip settings (index, find-links, cert) into the build
#                         and mount the local paths they name read-only
#   ENGINE=podman|docker  BUILD_ARGS="--build-arg X=Y ..." extra engine arguments
#   TRAINBENCH_CACHE      where the debootstrap base tarball is cached (default ~/.cache/trainbench)
# Writes build/images.json: the images built (name, reference, image id), the engine and its CONTAINERS_CONF;
# tests/images/ reads it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BASE=${BASE:-upstream}
ENGINE=${ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
if [ "$BASE" = local ]; then
  REGISTRY=${REGISTRY:-localhost/trainbench}
  TAG=${TAG:-dev}
else
  REGISTRY=${REGISTRY:-ghcr.io/trainbench}
  TAG=${TAG:-$VERSION}
fi
PUSH=${PUSH:-0}
HOST_PIP=${HOST_PIP:-auto}
CACHE=${TRAINBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trainbench}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the local base: what debootstrap installs, and the image it becomes (the name carries a hash of the recipe)
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
BASE_KEY=$(printf '%s %s' "$BASE_SUITE" "$BASE_PACKAGES" | sha256sum | cut -c1-12)
LOCAL_BASE=localhost/trainbench-base:$BASE_SUITE-$BASE_KEY
LOCAL_IMAGES="operator trainer-cpu"
MANIFEST=$ROOT/build/images.json

die() { echo "images/build.sh: $*" >&2; exit 1; }
log() { echo "images/build.sh: $*" >&2; }

all_images() { (cd images && ls -d */ | tr -d / | sort | tr '\n' ' '); }

# podman in a restricted sandbox (this project's CI): crun fails on hybrid cgroups and podman's default
# nofile ulimit (1048576) is above the hard limit. Write a containers.conf that fits, unless one is given.
podman_conf() {
  [ "$ENGINE" = podman ] || return 0
  [ -z "${CONTAINERS_CONF:-}" ] || return 0
  local hard nproc cg limits=()
  hard=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  cg=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)
  # podman asks for nofile 1048576 and (rootful) nproc 4194304; a sandbox refuses limits above its own, and
  # this project's CI sandbox refused nproc above 32768 while `ulimit -Hu` said 96549: ask for at most 16384
  # of each where the host is below podman's defaults (plenty for a trainer, its workers and compilers)
  [ "$hard" = unlimited ] || [ "$hard" -ge 1048576 ] || limits+=("\"nofile=$((hard < 16384 ? hard : 16384)):$((hard < 16384 ? hard : 16384))\"")
  [ "$nproc" = unlimited ] || [ "$nproc" -ge 4194304 ] || limits+=("\"nproc=$((nproc < 16384 ? nproc : 16384)):$((nproc < 16384 ? nproc : 16384))\"")
  if [ ${#limits[@]} -gt 0 ] || [ "$cg" != cgroup2fs ]; then
    mkdir -p "$CACHE"
    export CONTAINERS_CONF=$CACHE/containers.conf
    {
      echo "# written by trainbench images/build.sh for this host (ulimit -Hn $hard, -Hu $nproc, /sys/fs/cgroup: $cg)"
      echo "[containers]"
      [ ${#limits[@]} -eq 0 ] || echo "default_ulimits = [$(IFS=,; echo "${limits[*]}")]"
      echo "[engine]"
      if [ "$cg" != cgroup2fs ] && command -v runc >/dev/null; then echo 'runtime = "runc"'; fi
    } >"$CONTAINERS_CONF"
    log "CONTAINERS_CONF=$CONTAINERS_CONF ($(grep -v '^#' "$CONTAINERS_CONF" | tr '\n' ' '))"
  fi
}

# BASE=local: bookworm minbase with Python, made with debootstrap, cached as a tarball under $CACHE.
local_base() {
  [ "$ENGINE" = podman ] || [ "$ENGINE" = docker ] || die "unknown ENGINE $ENGINE"
  if "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    log "local base $LOCAL_BASE exists"
    return 0
  fi
  local tarball=$CACHE/base-$BASE_SUITE-$BASE_KEY.tar
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || die "BASE=local needs debootstrap (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    local root
    root=$(mktemp -d /tmp/trainbench-base.XXXXXX)
    log "debootstrap $BASE_SUITE ($BASE_PACKAGES) into $root"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 ||
      { tail -20 "$root.log" >&2; rm -rf "$root"; die "debootstrap failed (log above)"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root.log"
    mkdir -p "$CACHE"
    tar --numeric-owner -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$root"
  fi
  log "importing $tarball as $LOCAL_BASE"
  "$ENGINE" import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
}

# --build-arg PIP_* and read-only -v mounts that give the build this host's pip setup (a mirror, a CA bundle).
HOST_PIP_ARGS=()
host_pip() {
  [ "$HOST_PIP" != 0 ] || return 0
  command -v python3 >/dev/null || return 0
  local line
  while IFS= read -r line; do
    [ -n "$line" ] && HOST_PIP_ARGS+=("$line")
  done < <(python3 "$ROOT/images/host_pip.py" --engine "$ENGINE")
}

build_one() {
  local name=$1 ref=$REGISTRY/$1:$TAG
  local dockerfile=images/$name/Dockerfile
  [ -f "$dockerfile" ] || die "no image '$name' (known: $(all_images))"
  local args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "CREATED=$CREATED")
  # The same provenance again as labels (and, podman, environment) of the final image: podman 4.3's buildah
  # reuses a cached LABEL/ENV layer when only a build argument's value changed, so a rebuild of unchanged
  # sources kept the previous build's revision and date (seen here; tests/images checks them).
  args+=(--label "org.opencontainers.image.revision=$REVISION" --label "org.opencontainers.image.created=$CREATED"
    --label "org.opencontainers.image.version=$VERSION")
  if [ "$ENGINE" = podman ]; then
    args+=(--env "TRAINBENCH_IMAGE_REVISION=$REVISION" --env "TRAINBENCH_IMAGE_CREATED=$CREATED"
      --env "TRAINBENCH_IMAGE_VERSION=$VERSION")
  fi
  local mounts=()
  if [ "$BASE" = local ]; then
    # the images whose base is a build argument build on it (operator, trainer-cpu: CI; trainer-cuda-blackwell too)
    grep -q '^ARG BASE_IMAGE=' "$dockerfile" || die "$name needs its upstream base (BASE=upstream)"
    args+=(--build-arg "BASE_IMAGE=$LOCAL_BASE" --build-arg "PYTHON=python3")
  fi
  if [ -n "${TORCH_WHEELS:-}" ] && grep -q '^ARG TORCH_WHEELS' "$dockerfile"; then
    [ -d "$TORCH_WHEELS" ] || die "TORCH_WHEELS=$TORCH_WHEELS is not a directory"
    local wheels
    wheels=$(cd "$TORCH_WHEELS" && pwd)
    args+=(--build-arg "TORCH_WHEELS=$wheels")
    mounts+=(-v "$wheels:$wheels:ro")
  fi
  if [ -n "${TORCH_INDEX:-}" ] && grep -q '^ARG TORCH_INDEX' "$dockerfile"; then
    args+=(--build-arg "TORCH_INDEX=$TORCH_INDEX")
  fi
  # docker build has no -v: there the host's pip setup and TORCH_WHEELS cannot be mounted
  if [ "$ENGINE" = docker ] && [ ${#mounts[@]} -gt 0 ]; then
    die "TORCH_WHEELS needs podman (docker build cannot mount a host directory)"
  fi
  log "building $ref from $dockerfile"
  local t0=$SECONDS
  # shellcheck disable=SC2086
  "$ENGINE" build -f "$dockerfile" -t "$ref" "${args[@]}" "${mounts[@]}" "${HOST_PIP_ARGS[@]}" ${BUILD_ARGS:-} .
  log "built $ref in $((SECONDS - t0)) s"
  write_manifest "$name=$ref"
  if [ "$PUSH" = 1 ]; then
    log "pushing $ref"
    "$ENGINE" push "$ref"
  fi
}

# build/images.json: NAME=REF records an image built now, -NAME forgets one (about to be rebuilt: a failed build
# must not leave the tests an older image under its name)
write_manifest() {
  mkdir -p "$(dirname "$MANIFEST")"
  python3 - "$MANIFEST" "$ENGINE" "${CONTAINERS_CONF:-}" "$BASE" "$REVISION" "$CREATED" "$@" <<'PY'
import json, subprocess, sys
path, engine, conf, base, revision, created, *items = sys.argv[1:]
images = {}
try:
    images = json.load(open(path)).get("images", {})
except (OSError, ValueError):
    pass
for item in items:
    if item.startswith("-"):
        images.pop(item[1:], None)
        continue
    name, ref = item.split("=", 1)
    image_id = subprocess.run([engine, "image", "inspect", "--format", "{{.Id}}", ref],
                              capture_output=True, text=True, check=True).stdout.strip()
    images[name] = {"ref": ref, "id": image_id, "base": base, "revision": revision, "created": created}
json.dump({"engine": engine, "containers_conf": conf or None, "images": images}, open(path, "w"), indent=2)
PY
}

clean() {
  podman_conf
  if [ -f "$MANIFEST" ]; then
    python3 -c 'import json,sys; [print(v["ref"]) for v in json.load(open(sys.argv[1]))["images"].values()]' "$MANIFEST" |
      while read -r ref; do "$ENGINE" rmi -f "$ref" >/dev/null 2>&1 && log "removed $ref" || true; done
    rm -f "$MANIFEST"
  fi
  "$ENGINE" rmi -f "$LOCAL_BASE" >/dev/null 2>&1 && log "removed $LOCAL_BASE (its tarball stays in $CACHE)" || true
  if [ "$ENGINE" = podman ]; then  # build containers an interrupted `podman build` left behind
    "$ENGINE" ps -a --external --format '{{.ID}} {{.Names}}' | awk '$2 ~ /-working-container(-[0-9]+)?$/ {print $1}' |
      xargs -r "$ENGINE" rm -f >/dev/null 2>&1 || true
  fi
  "$ENGINE" image prune -f >/dev/null 2>&1 || true
}

cmd=${1:-build}
[ $# -eq 0 ] || shift
case $cmd in
  base)
    podman_conf
    local_base
    ;;
  clean) clean ;;
  build)
    command -v "$ENGINE" >/dev/null || die "no container engine: install podman (apt-get install podman) or docker"
    names=${*:-${IMAGES:-}}
    if [ -z "$names" ] || [ "$names" = all ]; then
      if [ "$BASE" = local ]; then names=$LOCAL_IMAGES; else names=$(all_images); fi
    fi
    REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
    # a build from a tree with uncommitted changes to what goes into the image says so
    if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain -- pyproject.toml README.md src operator trainer images 2>/dev/null)" ]; then
      REVISION=$REVISION-dirty
    fi
    CREATED=${CREATED:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}
    podman_conf
    [ "$BASE" != local ] || local_base
    host_pip
    forget=()
    for name in $names; do forget+=("-$name"); done
    write_manifest "${forget[@]}"
    for name in $names; do build_one "$name"; done
    log "built: $names (build/images.json)"
    ;;
  *) die "unknown command '$cmd' (build, base, clean)" ;;
esac
