//go:build tools

// Package tools names the etcd server command this module builds, so go.sum pins its dependencies.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
