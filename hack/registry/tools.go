//go:build tools

// Package tools records, for `go mod tidy`, the command that build-node.sh builds; the
// build tag keeps it out of every build.
package tools

import _ "github.com/distribution/distribution/v3/cmd/registry"
