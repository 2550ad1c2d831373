#!/usr/bin/env bash
# Build the raft-exchange image.
#
# Where a registry answers, this is just `docker build -t IMAGE .`.
# On machines without one (no `FROM python:...` pull possible) it makes:
#   1. a Debian bookworm base image with debootstrap, imported as $LOCAL_BASE
#      (cached: made once per machine);
#   2. a wheelhouse in build/wheels with the host's pip (Python 3.11, like
#      Debian bookworm's python3), so the build installs with --no-index;
# and passes both as build arguments. The Dockerfile stays the one users build.
#
#   IMAGE=raft-exchange:dev  BASE_IMAGE=...  scripts/build-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-raft-exchange:dev}
LOCAL_BASE=${LOCAL_BASE:-raft-exchange-base:bookworm}
PY=${PY:-.venv/bin/python}
start=$(date +%s)

scripts/dockerd.sh
docker info >/dev/null 2>&1 || { echo "build-image: no Docker engine available" >&2; exit 2; }

if [ -n "${BASE_IMAGE:-}" ]; then
    exec docker build --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" .
fi
if timeout 20 docker pull -q python:3.11-slim-bookworm >/dev/null 2>&1; then
    exec docker build -t "$IMAGE" .
fi

echo "build-image: no registry; using a local Debian base and a host-built wheelhouse" >&2
if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "build-image: debootstrap is not installed (scripts/system-deps.sh)" >&2; exit 2; }
    rootfs=$(mktemp -d /tmp/raft-exchange-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    # the same mirror configuration as the host, so `apt-get install` works in builds
    cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$LOCAL_BASE" >/dev/null
fi

# Resolve the wheelhouse with the image's own interpreter (Debian bookworm's
# python3, 3.11.2): a newer host Python may pick releases that refuse 3.11.2.
wheel_python=$PY
if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    [ -x build/wheel-venv/bin/pip ] || /usr/bin/python3 -m venv build/wheel-venv
    wheel_python=build/wheel-venv/bin/python
fi
rm -rf build/wheels
"$wheel_python" -m pip wheel -q ".[backup]" -c constraints.txt -w build/wheels 2> >(grep -v -e '^WARNING: Location' -e 'BuildBackendWarning' >&2)
docker build -q --build-arg BASE_IMAGE="$LOCAL_BASE" --build-arg PIP_NO_INDEX=1 -t "$IMAGE" . >/dev/null
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
echo "build-image: built $IMAGE ($((size / 1000000)) MB) in $(( $(date +%s) - start )) s"
