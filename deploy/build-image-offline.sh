#!/usr/bin/env bash
# Build the image without a registry: a Debian bookworm base made with
# debootstrap (its python3 is 3.11), imported into podman, then the Dockerfile
# on top. What was done on the development machine (see README, Deploying).
# Needs root and Debian's debootstrap, podman and buildah packages.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-/tmp/backoffice-image}"
TAG="${TAG:-localhost/backoffice-jobs:local}"
mkdir -p "$WORK"
if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$WORK/rootfs" http://deb.debian.org/debian
fi
ln -sf python3 "$WORK/rootfs/usr/bin/python"
tar -C "$WORK/rootfs" -c . | podman --storage-driver vfs import - localhost/bookworm-python:local
podman --storage-driver vfs build --network=host --isolation=chroot \
  --build-arg BASE_IMAGE=localhost/bookworm-python:local --build-arg PYTHON_BIN=python3 \
  -t "$TAG" .
echo "built $TAG"
