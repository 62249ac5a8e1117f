// Package faults_test ends the guard process under load on its own local
// control plane: SIGKILL during a switch storm (the API server fails every
// switch closed and the route keeps its backend until the guard is back)
// and SIGTERM during a slow decision (the guard drains it before it exits).
// It never touches the shared suite's cluster or guard in ./e2e.
package faults_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

const (
	// localPostgres is the database server `make test` runs (.ci/run).
	localPostgres = "127.0.0.1:5432"
	// postgresDSN reaches it as the tutorial's Secret would.
	postgresDSN = "postgresql://postgres@127.0.0.1:5432/test?sslmode=require"
	// dbTimeout is the guard's --db-timeout: the time a decision on a
	// database that never answers takes.
	dbTimeout = 3 * time.Second
)

// One control plane and one guard serve the package; tests run one after
// another and each leaves the guard running.
var shared tutorial.Shared[*env]

// env is the package's control plane, guard and clients.
type env struct {
	stack     *tutorial.Stack
	cluster   *cluster.Cluster
	guard     *tutorial.Guard
	kube      client.Client
	manifests *tutorial.Manifests
	dir       string // the guard's files and kubectl's home
}

func TestMain(m *testing.M) {
	os.Exit(shared.Main(m, func(e *env) *tutorial.Stack { return e.stack }))
}

// setup returns the package's environment, starting it on first use; it
// skips (or, with CUTOVER_GUARD_TEST_REQUIRED=1, fails) when the tools or
// the local database are missing.
func setup(t *testing.T) *env {
	t.Helper()
	e := shared.Get(t, start)
	e.guard.LogOnFailure(t, 60)
	return e
}

// start brings up the cluster, the guard and the tutorial's objects, as
// the shared suite does, or says why it cannot (skip).
func start() (_ *env, skip string, _ error) {
	toolsDir, skip := tutorial.Preflight(localPostgres)
	if skip != "" {
		return nil, skip, nil
	}
	s, err := tutorial.StartStack(context.Background(), tutorial.StackOptions{
		Name: "e2e/faults", ToolsDir: toolsDir, DSN: postgresDSN, DBTimeout: dbTimeout,
		// Every switch to green probes the database: no answer is reused
		// across a restart or between the tests' decisions.
		GuardArgs: []string{"--db-cache-ttl=0"},
	})
	if err != nil {
		return nil, "", err
	}
	return &env{stack: s, cluster: s.Cluster, guard: s.Guard, kube: s.Kube, dir: s.Dir, manifests: tutorial.MustLoad()}, "", nil
}

// kubectl returns the real kubectl against the package's cluster.
func (e *env) kubectl() *tutorial.Kubectl {
	return &tutorial.Kubectl{
		Binary:     e.cluster.Kubectl,
		Kubeconfig: e.cluster.Kubeconfig,
		Home:       filepath.Join(e.dir, "kubectl"),
	}
}

// reset makes blue and green both serve 2 ready replicas, creates the
// route afresh to blue, and sets the Secret's connection string to dsn.
// The route is created while the Secret still reaches the local database:
// the guard checks creates, and blue reads the Secret too.
func (e *env) reset(t *testing.T, dsn string) {
	t.Helper()
	ctx := t.Context()
	if err := tutorial.SetSecret(ctx, e.kube, tutorial.Namespace, postgresDSN); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for _, name := range []string{tutorial.Blue, tutorial.Green} {
		go func() { errs <- tutorial.Serve(ctx, e.kube, e.manifests.Deployment(name, tutorial.Replicas, false)) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := tutorial.Recreate(ctx, e.kube, e.manifests.Route.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	if err := tutorial.SetSecret(ctx, e.kube, tutorial.Namespace, dsn); err != nil {
		t.Fatal(err)
	}
}

// ensureGuard restarts the guard if a test left it stopped, so that the
// next test finds it serving.
func (e *env) ensureGuard(t *testing.T) {
	t.Helper()
	if !e.guard.Exited() {
		return
	}
	if err := e.guard.Restart(context.WithoutCancel(t.Context()), time.Minute); err != nil {
		t.Fatal(err)
	}
}
