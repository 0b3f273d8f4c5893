#!/usr/bin/env bash
# Builds and installs what a real node of kubenpu's dev cluster runs beside the kubelet:
#   - containerd, containerd-shim-runc-v2 and ctr, from the containerd Go module pinned in
#     hack/containerd/go.mod;
#   - the CNCF distribution registry (the dev cluster's private registry), from the module
#     pinned in hack/registry/go.mod;
#   - from Debian's packages, when missing: runc (crun refuses the hybrid cgroup layout of
#     these machines), the CNI plugins, iptables and mmdebstrap (hack/build-images.sh).
# The Go commands go into a cache directory outside the repository; nothing is rebuilt when
# the binaries are there. No prebuilt binary is downloaded.
#
# Output: ${KUBENPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenpu}/node-<containerd>-<registry>/bin
# The last line printed on success is that directory.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=hack/lib.sh
source "$here/lib.sh"
go_build_env

# Debian package -> a file it installs.
declare -A debs=(
    [runc]=/usr/sbin/runc
    [containernetworking-plugins]=/usr/lib/cni/bridge
    [iptables]=/usr/sbin/iptables
    [mmdebstrap]=/usr/bin/mmdebstrap
)
want=()
for pkg in "${!debs[@]}"; do
    [[ -e "${debs[$pkg]}" ]] || want+=("$pkg")
done
if (( ${#want[@]} )); then
    if [[ $(id -u) != 0 ]]; then
        echo "build-node: missing Debian packages ${want[*]}; install them as root" >&2
        exit 1
    fi
    echo "build-node: installing ${want[*]} from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
fi

version_of() {  # version_of DIR MODULE: the version DIR/go.mod requires MODULE at
    sed -n "s|^require $2 \(v[0-9.]*\)$|\1|p" "$1/go.mod"
}
containerd_version="$(version_of "$here/containerd" github.com/containerd/containerd/v2)"
registry_version="$(version_of "$here/registry" github.com/distribution/distribution/v3)"
if [[ -z "$containerd_version" || -z "$registry_version" ]]; then
    echo "build-node: no version found in hack/containerd/go.mod or hack/registry/go.mod" >&2
    exit 1
fi

bin_dir="$cache_root/node-containerd-$containerd_version-registry-$registry_version/bin"
binaries=(containerd containerd-shim-runc-v2 ctr registry)
if all_built "$bin_dir" "${binaries[@]}"; then
    echo "$bin_dir"
    exit 0
fi

require_go build-node 1.26.6
scratch_beside "$bin_dir"
start=$SECONDS
echo "build-node: building containerd $containerd_version and registry $registry_version into $bin_dir" >&2
(
    cd "$here/containerd"
    pkg=github.com/containerd/containerd/v2
    # What `containerd --version` reports, as in a release build. No cgo: the btrfs
    # snapshotter (which needs it) is left out; overlayfs and native remain.
    ldflags="-s -w -X $pkg/version.Version=$containerd_version -X $pkg/version.Package=$pkg"
    go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags="$ldflags" -o "$scratch/" \
        "$pkg/cmd/containerd" "$pkg/cmd/containerd-shim-runc-v2" "$pkg/cmd/ctr"
)
(
    cd "$here/registry"
    pkg=github.com/distribution/distribution/v3
    go build -trimpath -ldflags="-s -w -X $pkg/version.version=$registry_version" \
        -o "$scratch/registry" "$pkg/cmd/registry"
)
mkdir -p "$bin_dir"
for b in "${binaries[@]}"; do
    mv -f "$scratch/$b" "$bin_dir/$b"
done
echo "build-node: built in $((SECONDS - start)) s" >&2
echo "$bin_dir"
