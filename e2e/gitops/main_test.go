// Package gitops_test drives the tutorial's blue-green release through a
// real GitOps engine: Flux's source-controller and kustomize-controller
// sync the tutorial's objects from a Git repository on loopback into the
// local control plane, where the real guard judges every route change
// kustomize-controller applies.
package gitops_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/flux"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

const (
	localPostgres = "127.0.0.1:5432"
	postgresDSN   = "postgresql://postgres@127.0.0.1:5432/test?sslmode=require"

	// appNamespace holds what Git holds; fluxNamespace the Flux objects.
	appNamespace  = "shop"
	fluxNamespace = "flux-system"
	// applier is the ServiceAccount kustomize-controller impersonates; it
	// is in the guard's --override-groups (break glass through Git).
	applier     = "release-applier"
	applierUser = "system:serviceaccount:" + fluxNamespace + ":" + applier

	// interval and retryInterval of the GitRepository and Kustomization.
	interval = 5 * time.Second
)

var shared tutorial.Shared[*env]

type env struct {
	stack *tutorial.Stack
	flux  *flux.Flux
	repo  *flux.Repo
	dir   string
}

func TestMain(m *testing.M) {
	os.Exit(shared.Main(m, func(e *env) *tutorial.Stack {
		_ = e.flux.Stop()
		_ = e.repo.Close()
		return e.stack
	}))
}

func setup(t *testing.T) *env {
	t.Helper()
	e := shared.Get(t, start)
	e.stack.Guard.LogOnFailure(t, 60)
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range flux.Controllers {
				t.Logf("===== %s (last 40 lines) =====\n%s", name, e.flux.LogTail(name, 40))
			}
		}
	})
	return e
}

func start() (_ *env, skip string, _ error) {
	toolsDir, skip := tutorial.Preflight(localPostgres)
	if skip != "" {
		return nil, skip, nil
	}
	if missing := flux.Missing(toolsDir); len(missing) > 0 {
		return nil, "flux not built (run hack/build-tools.sh): missing " + filepath.Join(missing...), nil
	}
	if why := flux.GitMissing(); why != "" {
		return nil, why, nil
	}
	ctx := context.Background()
	s, err := tutorial.StartStack(ctx, tutorial.StackOptions{
		Name: "gitops", ToolsDir: toolsDir, DSN: postgresDSN, DBTimeout: time.Second,
		GuardArgs: []string{"--zap-log-level=debug", "--override-groups=" + applierUser},
	})
	if err != nil {
		return nil, "", err
	}
	e := &env{stack: s, dir: filepath.Join(s.Dir, "gitops")}
	fail := func(err error) (*env, string, error) {
		_ = e.flux.Stop()
		if e.repo != nil {
			_ = e.repo.Close()
		}
		_ = s.Teardown(true, os.Stderr)
		return nil, "", err
	}
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return fail(err)
	}
	if e.repo, err = flux.NewRepo(e.dir); err != nil {
		return fail(err)
	}
	e.flux, err = flux.Start(ctx, flux.Options{ToolsDir: toolsDir, Config: s.Cluster.Config, Kubeconfig: s.Cluster.Kubeconfig, Dir: e.dir})
	if err != nil {
		return fail(err)
	}
	return e, "", nil
}
