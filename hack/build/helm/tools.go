//go:build tools

// Package tools names the helm command this module builds, so go.sum pins its dependencies.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
