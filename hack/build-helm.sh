#!/usr/bin/env bash
# Builds the official `helm` command from its published Go module (helm.sh/helm/v3), at the
# version pinned in hack/helm/go.mod, into a cache directory outside the repository. Does
# nothing when the binary is already there. No prebuilt binary is downloaded: the module
# proxy serves the source and the local Go toolchain compiles it.
#
# Output: ${KUBENPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenpu}/helm-<version>/bin/helm
# The last line printed on success is that directory.
set -euo pipefail

here="$(cd "$(dirname "$0")/helm" && pwd)"
cd "$here"
# shellcheck source=hack/lib.sh
source "$here/../lib.sh"
go_build_env

helm_version="$(sed -n 's/^require helm\.sh\/helm\/v3 \(v[0-9.]*\)$/\1/p' go.mod)"
if [[ -z "$helm_version" ]]; then
    echo "build-helm: no helm.sh/helm/v3 version found in $here/go.mod" >&2
    exit 1
fi

bin_dir="$cache_root/helm-$helm_version/bin"
if [[ -x "$bin_dir/helm" ]]; then
    echo "$bin_dir"
    exit 0
fi

require_go build-helm 1.26

# Stamp what `helm version` reports and the Kubernetes version `helm lint`/`template` assume
# (Helm's own release build does the same from the client-go module it is built with).
client_go="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*$/\1/p' go.mod)"
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
if [[ -n "$client_go" ]]; then
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$client_go"
    done
fi

scratch_beside "$bin_dir"

echo "build-helm: building Helm $helm_version into $bin_dir" >&2
echo "build-helm: $(go version); this takes a few minutes the first time" >&2
start=$SECONDS
go build -trimpath -ldflags="$ldflags" -o "$scratch/helm" helm.sh/helm/v3/cmd/helm
mkdir -p "$bin_dir"
mv -f "$scratch/helm" "$bin_dir/helm"
echo "build-helm: built in $((SECONDS - start)) s" >&2
echo "$bin_dir"
