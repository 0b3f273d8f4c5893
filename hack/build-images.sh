#!/usr/bin/env bash
# Builds the container images of the real-node dev cluster, with no registry to pull from
# and no Docker daemon: kubenpu.local/pause (a static pause binary from hack/images/pause.c),
# kubenpu.local/kubenpu, kubenpu.local/npu-check and kubenpu.local/resnet50 (a Debian root
# filesystem made with mmdebstrap from this machine's apt mirror, plus kubenpu,
# examples/npu-check or examples/resnet50 with its pinned wheels from PyPI) and
# kubenpu.local/kube-scheduler (the control plane's binary). Each is an OCI image-layout
# archive that `ctr -n k8s.io images import` loads. Does nothing for an image whose inputs
# did not change. Arguments go to the CLI (e.g. --only pause).
#
# Needs: .venv (make venv), gcc with a static libc (libc6-dev), binutils' strip, mmdebstrap
# run as root, and hack/build-control-plane.sh run first (for kube-scheduler).
# Output: ${KUBENPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenpu}/images; one line per
# image (name, archive, digest, cached|built, size, seconds), and that directory last.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"

python="$repo/.venv/bin/python"
if [[ ! -x "$python" ]]; then
    echo "build-images: $python is missing; run 'make venv' first" >&2
    exit 1
fi

cd "$repo"
KUBENPU_CACHE_DIR="$cache_root" "$python" -m kubenpu.devcluster.images build "$@"
echo "$cache_root/images"
