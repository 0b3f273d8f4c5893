# Shared by the hack/build-*.sh scripts: build an official Go command from its published
# module with the local toolchain into the cache outside the repository. Source it; it
# defines functions and the variable cache_root, and changes nothing else.

# Where built binaries are cached.
cache_root="${KUBENPU_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubenpu}"

# The local toolchain only, never a fetched one; modules from the proxy configured here.
go_build_env() {
    export GOTOOLCHAIN=local
    export GOFLAGS="-buildvcs=false"
    export CGO_ENABLED=0
}

# require_go NAME MIN: make sure `go` is callable, else explain and exit.
require_go() {
    # Go's own installer puts it in /usr/local/go, which only login shells tend to have on PATH.
    if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
        PATH="/usr/local/go/bin:$PATH"
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "$1: 'go' is not on PATH; install Go $2 or newer" >&2
        exit 1
    fi
}

# all_built BIN_DIR NAME...: true when every NAME is an executable in BIN_DIR.
all_built() {
    local dir="$1" name
    shift
    for name in "$@"; do
        [[ -x "$dir/$name" ]] || return 1
    done
}

# scratch_beside BIN_DIR: a scratch directory next to BIN_DIR, removed on exit. Binaries are
# built there and moved in at the end, so an interrupted build never leaves a half-written
# binary that looks finished. Sets the variable scratch.
scratch_beside() {
    mkdir -p "$(dirname "$1")"
    scratch="$(mktemp -d "$(dirname "$1")/build.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT
}
