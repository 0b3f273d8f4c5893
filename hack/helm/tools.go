//go:build tools

// Package tools keeps the helm command required by this module, so `go mod tidy` keeps
// its dependencies and hack/build-helm.sh can build it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
