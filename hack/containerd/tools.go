//go:build tools

// Package tools records, for `go mod tidy`, the commands that build-node.sh builds; the
// build tag keeps it out of every build.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
