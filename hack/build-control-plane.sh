#!/usr/bin/env bash
# Builds the official Kubernetes binaries (etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager, kubelet, kube-proxy, kubectl) from their published Go modules, at the versions
# pinned in hack/go.mod, into a cache directory outside the repository. Does nothing when the
# binaries are already there.
#
# Output: ${KUBENPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenpu}/k8s-<version>/bin
# The last line printed on success is that directory.
#
# kubectl is always built: a packaged one is rarely within one minor version of the server.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"
go_build_env

k8s_version="$(sed -n 's/^[[:space:]]*k8s\.io\/kubernetes \(v[0-9.]*\)$/\1/p' go.mod)"
if [[ -z "$k8s_version" ]]; then
    echo "build-control-plane: no k8s.io/kubernetes version found in $here/go.mod" >&2
    exit 1
fi

bin_dir="$cache_root/k8s-$k8s_version/bin"
binaries=(etcd kube-apiserver kube-scheduler kube-controller-manager kubelet kube-proxy kubectl)
packages=(go.etcd.io/etcd/server/v3)
for b in "${binaries[@]:1}"; do
    packages+=("k8s.io/kubernetes/cmd/$b")
done

if all_built "$bin_dir" "${binaries[@]}"; then
    echo "$bin_dir"
    exit 0
fi

require_go build-control-plane 1.26

major_minor="${k8s_version#v}"
major="${major_minor%%.*}"
minor="${major_minor#*.}"
minor="${minor%%.*}"
# What `kubectl version` and the API server's /version report, as in an official release.
version_pkg=k8s.io/component-base/version
ldflags="-s -w"
ldflags+=" -X $version_pkg.gitVersion=$k8s_version"
ldflags+=" -X $version_pkg.gitMajor=$major -X $version_pkg.gitMinor=$minor"
ldflags+=" -X $version_pkg.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$k8s_version"

scratch_beside "$bin_dir"

echo "build-control-plane: building Kubernetes $k8s_version control plane into $bin_dir" >&2
echo "build-control-plane: $(go version); this takes a while the first time" >&2
start=$SECONDS
# One `go build` for all the commands so shared packages are compiled once.
go build -trimpath -ldflags="$ldflags" -o "$scratch/" "${packages[@]}"
# The etcd main package is its module's root, so go names that binary after the path element
# before the major-version suffix ("server").
mv "$scratch/server" "$scratch/etcd"

mkdir -p "$bin_dir"
for b in "${binaries[@]}"; do
    mv -f "$scratch/$b" "$bin_dir/$b"
done
echo "build-control-plane: built in $((SECONDS - start)) s" >&2
echo "$bin_dir"
