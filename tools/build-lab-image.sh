#!/usr/bin/env bash
# Builds the images of the container lab (deploy/lab/) with podman, without any
# image registry:
#   1. a Debian bookworm root (debootstrap --variant=minbase, python3, python3-venv),
#      trimmed, as a tarball cached under ~/.cache/consul-dns-gateway/ and keyed by
#      its inputs, imported as localhost/consul-dns-gateway-base:<key>;
#   2. the gateway image (./Containerfile) from wheels of this checkout and its
#      dependencies built on the host (`pip wheel`; host Python and bookworm's are 3.11);
#   3. the Consul image (deploy/lab/Containerfile.consul) with the binary of
#      tools/build-consul.sh ($CONSUL_BIN if set).
# Prints the two exact image names (gateway, consul); also tags them
# localhost/consul-dns-gateway:lab and localhost/consul-dns-gateway-consul:lab.
# Needs root (debootstrap, podman).
set -euo pipefail
if [ -z "${HOME:-}" ]; then
  HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
  export HOME
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/deploy/lab/containers.conf}
CACHE=${CONSUL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-dns-gateway}
# The project venv of `make` (it has pip), else the system python3.
PYTHON=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3)}
SUITE=bookworm
# The mirror apt itself uses here (deb.debian.org unless LAB_DEBIAN_MIRROR says otherwise).
MIRROR=${LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv
# Bump when the trimming below changes: it is part of the cache key.
ROOTFS_RECIPE=1
GATEWAY_IMAGE=localhost/consul-dns-gateway:lab
PATH="$PATH:/usr/sbin:/sbin"
START=$SECONDS
log() { echo "build-lab-image: [$((SECONDS - START)) s] $*" >&2; }

mkdir -p "$CACHE"
KEY=$(printf '%s\n' "$SUITE" minbase "$PACKAGES" "$MIRROR" "$ROOTFS_RECIPE" "$(uname -m)" \
  | sha256sum | cut -c1-12)
ROOTFS=$CACHE/lab-rootfs-$KEY.tar
BASE_IMAGE=localhost/consul-dns-gateway-base:$KEY

if [ ! -s "$ROOTFS" ]; then
  log "debootstrap $SUITE ($PACKAGES) from $MIRROR (first time: about a minute)"
  ROOT=$(mktemp -d "$CACHE/lab-rootfs-$KEY.XXXXXX")
  trap 'rm -rf "$ROOT" "$ROOTFS.tmp"' EXIT
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT/root" "$MIRROR" \
    > "$ROOT/debootstrap.log" 2>&1 || { tail -20 "$ROOT/debootstrap.log" >&2; exit 1; }
  # What a container never uses: downloaded packages, package lists, docs, man pages,
  # translations (133 MB left of 275 MB).
  rm -rf "$ROOT"/root/var/cache/apt/archives/*.deb "$ROOT"/root/var/lib/apt/lists/* \
    "$ROOT"/root/usr/share/doc "$ROOT"/root/usr/share/man "$ROOT"/root/usr/share/locale \
    "$ROOT"/root/usr/share/info
  tar -C "$ROOT/root" --numeric-owner -cf "$ROOTFS.tmp" .
  mv "$ROOTFS.tmp" "$ROOTFS"
  rm -rf "$ROOT"
  trap - EXIT
fi

if ! podman image exists "$BASE_IMAGE"; then
  log "importing $ROOTFS as $BASE_IMAGE"
  podman import --quiet "$ROOTFS" "$BASE_IMAGE" >/dev/null
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT

# The gateway: the wheel of this checkout (built from a copy, so the worktree gets no
# build/ or egg-info) and its dependencies' wheels; pip's cache makes reruns quick.
# Tagged by a hash of what goes in, so an unchanged checkout is not rebuilt, and so
# that test runs of different checkouts at the same time each get their own image
# (older builds share the base layer and stay until removed: `podman rmi` them).
SRC_KEY=$( (cd "$REPO" && find gateway -name '*.py' -print0 | sort -z | xargs -0 cat; \
  cat pyproject.toml Containerfile; echo "$KEY") | sha256sum | cut -c1-12)
GATEWAY_BUILD=localhost/consul-dns-gateway:src-$SRC_KEY
if ! podman image exists "$GATEWAY_BUILD"; then
  mkdir -p "$CTX/src" "$CTX/gateway/wheels"
  cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/gateway" "$CTX/src/"
  find "$CTX/src" -name __pycache__ -prune -exec rm -rf {} +
  log "building wheels with $PYTHON"
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check \
    --wheel-dir "$CTX/gateway/wheels" "$CTX/src" >&2
  cp "$REPO/Containerfile" "$CTX/gateway/Containerfile"
  log "building $GATEWAY_BUILD"
  podman build --quiet --network none --build-arg "BASE=$BASE_IMAGE" \
    -t "$GATEWAY_BUILD" -f "$CTX/gateway/Containerfile" "$CTX/gateway" >/dev/null
fi
# The stable name for people (and deploy/lab/compose.yaml's default); what this
# script prints is the exact build.
podman tag "$GATEWAY_BUILD" "$GATEWAY_IMAGE"

# Consul: the binary of tools/build-consul.sh, tagged by its version and the base.
CONSUL_BIN=${CONSUL_BIN:-$("$REPO/tools/build-consul.sh")}
# The whole output first, then its first line: `consul version | head -1` under
# pipefail fails when consul dies of SIGPIPE (see tools/build-consul.sh).
CONSUL_VERSION=$("$CONSUL_BIN" version)
CONSUL_VERSION=${CONSUL_VERSION%%$'\n'*}
CONSUL_VERSION=${CONSUL_VERSION#Consul }
CONSUL_IMAGE=localhost/consul-dns-gateway-consul:$CONSUL_VERSION-$KEY-$(
  cat "$REPO/deploy/lab/Containerfile.consul" "$REPO/deploy/lab/app/entrypoint.sh" \
    | sha256sum | cut -c1-8)
if ! podman image exists "$CONSUL_IMAGE"; then
  mkdir -p "$CTX/consul"
  # Without its symbol tables (168 MB -> 120 MB): a smaller layer to write and import.
  if command -v strip >/dev/null 2>&1; then
    strip -o "$CTX/consul/consul" "$CONSUL_BIN"
  else
    cp "$CONSUL_BIN" "$CTX/consul/consul"
  fi
  chmod 0755 "$CTX/consul/consul"
  cp "$REPO/deploy/lab/app/entrypoint.sh" "$CTX/consul/entrypoint.sh"
  chmod 0755 "$CTX/consul/entrypoint.sh"
  log "building $CONSUL_IMAGE"
  podman build --quiet --network none --build-arg "BASE=$BASE_IMAGE" \
    -t "$CONSUL_IMAGE" -f "$REPO/deploy/lab/Containerfile.consul" "$CTX/consul" >/dev/null
fi
# Stable names for deploy/lab/compose.yaml.
podman tag "$CONSUL_IMAGE" localhost/consul-dns-gateway-consul:lab
log "done"
echo "$GATEWAY_BUILD"
echo "$CONSUL_IMAGE"
