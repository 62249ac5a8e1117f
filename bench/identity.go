package main

import (
	"context"
	"path/filepath"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The guards of the lab read the cluster as the install runs them: as the
// ServiceAccount cutover-guard/cutover-guard, bound to the ClusterRole of
// manifests/rbac (applied from this checkout), with a bound token from the
// TokenRequest API. So each of the guard's reads pays what it pays in a
// cluster (a cached token authentication, an RBAC evaluation), not what an
// admin's client certificate costs (a certificate chain verified per
// request, and no RBAC: system:masters is allowed everything).

// guardKubeconfig writes the guards' kubeconfig (tutorial.ServiceAccountKubeconfig)
// into the raw folder and returns its path.
func (l *lab) guardKubeconfig(ctx context.Context) (string, error) {
	path := filepath.Join(l.s.rawDir, "guard-kubeconfig")
	return path, tutorial.ServiceAccountKubeconfig(ctx, l.cluster, path)
}
