// Package plugin_test runs `kubectl cutover` as users do: the real kubectl
// finds the plugin binary, built from this repository, on PATH and runs it
// against a local control plane with the real guard registered as the
// validating webhook. It has its own control plane and guard; it never
// touches the other suites' clusters.
package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// dsn is the tutorial Secret's connection string; the guard runs with
// --skip-database-check, so nothing dials it (the database check has its
// own suites).
const dsn = "postgresql://app@127.0.0.1:5432/app?sslmode=require"

var shared tutorial.Shared[*env]

func TestMain(m *testing.M) {
	os.Exit(shared.Main(m, func(e *env) *tutorial.Stack { return e.stack }))
}

// env is the suite's control plane, guard and kubectl with the plugin on
// its PATH.
type env struct {
	stack     *tutorial.Stack
	kube      client.Client
	kubectl   *tutorial.Kubectl
	manifests *tutorial.Manifests
}

// setup returns the suite's environment, starting it on first use; it
// skips (or, with CUTOVER_GUARD_TEST_REQUIRED=1, fails) without the tools.
func setup(t *testing.T) *env {
	t.Helper()
	e := shared.Get(t, start)
	e.stack.Guard.LogOnFailure(t, 40)
	return e
}

func start() (*env, string, error) {
	toolsDir, skip := tutorial.Preflight()
	if skip != "" {
		return nil, skip, nil
	}
	ctx := context.Background()
	binDir, err := os.MkdirTemp("", "cutover-guard-plugin-bin-")
	if err != nil {
		return nil, "", err
	}
	built := make(chan error, 1)
	go func() { built <- buildPlugin(ctx, filepath.Join(binDir, "kubectl-cutover")) }()
	s, err := tutorial.StartStack(ctx, tutorial.StackOptions{
		Name: "e2e/plugin", ToolsDir: toolsDir, DSN: dsn,
		GuardArgs: []string{"--skip-database-check"},
	})
	err = errors.Join(err, <-built)
	if err == nil {
		// Into the stack's folder, which Teardown removes when the suite passed.
		pluginDir := filepath.Join(s.Dir, "plugin")
		if err = os.MkdirAll(pluginDir, 0o755); err == nil {
			err = os.Rename(filepath.Join(binDir, "kubectl-cutover"), filepath.Join(pluginDir, "kubectl-cutover"))
		}
		_ = os.RemoveAll(binDir)
		binDir = pluginDir
	}
	if err != nil {
		_ = os.RemoveAll(binDir)
		if s != nil {
			_ = s.Teardown(true, os.Stderr)
		}
		return nil, "", err
	}
	// The plugin's folder, then kubectl's, then the rest of PATH: kubectl
	// finds kubectl-cutover there as it finds any plugin.
	path := binDir + string(os.PathListSeparator) + filepath.Dir(s.Cluster.Kubectl) + string(os.PathListSeparator) + os.Getenv("PATH")
	return &env{
		stack: s, kube: s.Kube, manifests: tutorial.MustLoad(),
		kubectl: &tutorial.Kubectl{
			Binary: s.Cluster.Kubectl, Kubeconfig: s.Cluster.Kubeconfig, Home: filepath.Join(s.Dir, "kubectl"),
			Env: []string{"PATH=" + path},
		},
	}, "", nil
}

// buildPlugin builds the plugin as `make plugin` does.
func buildPlugin(ctx context.Context, out string) error {
	root, err := tutorial.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, "./cmd/kubectl-cutover")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build kubectl-cutover: %w\n%s", err, b)
	}
	return nil
}

// cutover runs `kubectl cutover args...` with standard input not a terminal.
func (e *env) cutover(t *testing.T, args ...string) *tutorial.Result {
	t.Helper()
	r := e.kubectl.Run(t.Context(), append([]string{"cutover"}, args...)...)
	t.Logf("%s", r)
	if r.ExitCode < 0 {
		t.Fatalf("kubectl cutover did not run: %v", r.Err)
	}
	return r
}

// cutoverJSON runs the plugin with -o json and decodes its stdout into v.
func (e *env) cutoverJSON(t *testing.T, v any, args ...string) *tutorial.Result {
	t.Helper()
	r := e.cutover(t, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.Stdout), v); err != nil {
		t.Fatalf("-o json: stdout is not the JSON of %T: %v\n%s", v, err, r.Stdout)
	}
	return r
}

// sh runs one of the tutorial's command lines.
func (e *env) sh(t *testing.T, line string) *tutorial.Result {
	t.Helper()
	r := e.kubectl.Shell(t.Context(), line)
	t.Logf("%s", r)
	return r
}

// reset puts the tutorial's objects back: blue serving, green serving or
// held Pending, and the route created afresh (to app-blue, no annotations).
func (e *env) reset(t *testing.T, greenReady bool) {
	t.Helper()
	ctx := t.Context()
	if err := e.manifests.ServeColors(ctx, e.kube, greenReady); err != nil {
		t.Fatal(err)
	}
	if err := tutorial.Recreate(ctx, e.kube, e.manifests.Route.DeepCopy()); err != nil {
		t.Fatal(err)
	}
}

// route reads the tutorial's route.
func (e *env) route(t *testing.T) *gwv1.HTTPRoute {
	t.Helper()
	var r gwv1.HTTPRoute
	if err := e.kube.Get(t.Context(), client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// backend is the route's first backendRef's name: where the tutorial's
// troubleshooting command says traffic goes.
func (e *env) backend(t *testing.T) string {
	t.Helper()
	return string(e.route(t).Spec.Rules[0].BackendRefs[0].Name)
}

// scaleBlueToZero runs the tutorial's scale-down and waits until blue has
// no pod left.
func (e *env) scaleBlueToZero(t *testing.T) {
	t.Helper()
	if r := e.sh(t, tutorial.ScaleBlueDownCommand); !r.OK() {
		t.Fatalf("scale blue down: %s", r)
	}
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, tutorial.WaitTimeout, true, func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := e.kube.Get(ctx, client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Blue}, &d); err != nil {
			return false, nil
		}
		return d.Status.ObservedGeneration >= d.Generation && d.Status.Replicas == 0, nil
	})
	if err != nil {
		t.Fatalf("blue not scaled to zero: %v", err)
	}
}

func mustContain(t *testing.T, r *tutorial.Result, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(r.Output, w) {
			t.Errorf("output of %q lacks %q", r.Command, w)
		}
	}
}

func mustExit(t *testing.T, r *tutorial.Result, code int) {
	t.Helper()
	if r.ExitCode != code {
		t.Fatalf("%q: exit %d, want %d:\n%s", r.Command, r.ExitCode, code, r.Output)
	}
}
