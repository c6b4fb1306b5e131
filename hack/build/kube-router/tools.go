//go:build tools

// Package tools names the kube-router command this module builds, so go.sum pins its dependencies.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
