package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// What a step is expected to do, and what it did.
const (
	expectOK      = "ok"      // exit 0
	expectAllowed = "allowed" // exit 0, printing the tutorial's "patched"
	expectDenied  = "denied"  // refused by the guard's webhook
)

// step is one command of the narration.
type step struct {
	// name is the step in a few words, for the summary.
	name string
	// title says what the step does, in the tutorial's words.
	title string
	// command is run with sh exactly as printed.
	command string
	// expect is expectOK, expectAllowed, expectDenied, or the exact
	// output (a backend name from the tutorial's check).
	expect string
	// then runs after the command behaved as expected (e.g. waits for
	// the EndpointSlices to catch up with a rollout).
	then func(ctx context.Context) error
}

// outcome is a step's row in the summary.
type outcome struct {
	step step
	got  string
}

// demo is one run of the narration and everything it started.
type demo struct {
	root string
	out  io.Writer
	// binary is the guard to run; empty means bin/cutover-guard, built if
	// missing.
	binary string

	work    string // manifests, guard files, kubectl home
	cluster *cluster.Cluster
	guard   *tutorial.Guard
	db      *database
	kubectl *tutorial.Kubectl
	kube    client.Client
	rows    []outcome
	// keepFiles keeps work (logs) after cleanup, for a run that failed.
	keepFiles bool
}

func (d *demo) printf(format string, args ...any) { _, _ = fmt.Fprintf(d.out, format, args...) }

// run starts everything and narrates the tutorial; it returns the exit code.
func (d *demo) run(ctx context.Context) int {
	began := time.Now()
	if err := d.start(ctx); err != nil {
		if ctx.Err() != nil {
			d.printf("\ndemo: interrupted; stopping everything\n")
			return 1
		}
		d.printf("\ndemo: %v\n", err)
		if d.work != "" {
			d.keepFiles = true
			d.printf("Files kept in %s\n", d.work)
		}
		return 1
	}
	steps := d.steps()
	failed := false
	for i, s := range steps {
		got, err := d.do(ctx, i+1, s)
		d.rows = append(d.rows, outcome{step: s, got: got})
		if got != s.expect || err != nil {
			failed = true
			if err != nil {
				d.printf("   ✗ %v\n", err)
			}
			if ctx.Err() != nil || s.expect == expectOK {
				// Later steps build on this one.
				break
			}
		}
	}
	d.summary(len(steps))
	d.printf("\nThe demo took %s.\n", time.Since(began).Round(time.Second))
	if ctx.Err() != nil {
		d.printf("\ndemo: interrupted; stopping everything\n")
		return 1
	}
	if failed {
		d.keepFiles = true
		d.printf("\nSome steps did not behave as narrated. The guard's log is kept: %s\n", d.guard.LogPath)
		return 1
	}
	d.printf("\nEvery step behaved as narrated.\n")
	return 0
}

// start brings up the control plane, the database, the guard and its
// webhook, and writes the tutorial's manifest files.
func (d *demo) start(ctx context.Context) error {
	d.printf("cutover-guard demo: the blue-green tutorial's cutover and rollback, guarded.\n\n")
	toolsDir, err := cluster.ToolsDir()
	if err != nil {
		return err
	}
	if missing := cluster.MissingTools(toolsDir); len(missing) > 0 {
		return fmt.Errorf("control-plane tools missing (run make tools): %s", strings.Join(missing, ", "))
	}
	if d.work, err = os.MkdirTemp("", "cutover-guard-demo-"); err != nil {
		return err
	}

	// `make demo` has just built it; `go run ./e2e/demo` alone builds it
	// once.
	binary := d.binary
	if binary == "" {
		binary = filepath.Join(d.root, "bin", "cutover-guard")
	}
	if _, err := os.Stat(binary); err != nil {
		d.printf("Building %s ...\n", relTo(d.root, binary))
		if err := tutorial.BuildGuard(ctx, binary); err != nil {
			return err
		}
	}

	d.printf("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok) ...\n")
	d.cluster, err = cluster.Start(ctx, cluster.Options{ToolsDir: toolsDir})
	if err != nil {
		return err
	}
	d.printf("  up in %s; one fake node (%s) that runs pods without containers.\n", d.cluster.StartDuration.Round(100*time.Millisecond), d.cluster.NodeName)

	if d.db, err = startDatabase(ctx, d.printf); err != nil {
		return err
	}

	d.guard, err = tutorial.StartGuard(ctx, tutorial.GuardOptions{
		Binary:     binary,
		Kubeconfig: d.cluster.Kubeconfig,
		Dir:        filepath.Join(d.work, "guard"),
		DBTimeout:  time.Second,
	})
	if err != nil {
		return err
	}
	if d.kube, err = client.New(d.cluster.Config, client.Options{Scheme: tutorial.Scheme()}); err != nil {
		return err
	}
	if err := tutorial.Register(ctx, d.kube, d.guard, time.Minute); err != nil {
		return err
	}
	d.printf("Started cutover-guard (pid %d) on https://127.0.0.1:%d and registered it as the validating webhooks\n", d.guard.PID(), d.guard.Port)
	d.printf("  %s and %s, as installed (HTTPRoute and GRPCRoute updates that change spec.rules; failurePolicy Fail).\n", tutorial.HTTPRouteWebhook, tutorial.GRPCRouteWebhook)
	d.printf("  flags: %s\n", strings.Join(d.guard.Args, " "))
	d.printf("  log:   %s\n", d.guard.LogPath)

	manifests := filepath.Join(d.work, "manifests")
	if err := tutorial.WriteFiles(manifests, true); err != nil {
		return err
	}
	d.kubectl = &tutorial.Kubectl{
		Binary:     d.cluster.Kubectl,
		Kubeconfig: d.cluster.Kubeconfig,
		Dir:        manifests,
		Home:       filepath.Join(d.work, "kubectl"),
		Env:        []string{"DATABASE_URL=" + d.db.dsn},
	}
	d.printf("The tutorial's manifests are in %s; each command below runs there, as printed.\n", manifests)
	return nil
}

// steps is the narration.
func (d *demo) steps() []step {
	waitServing := func(name string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			// rollout status reads the Deployment; the EndpointSlices may be
			// a moment behind, and the guard checks both.
			return tutorial.WaitServing(ctx, d.kube, tutorial.Namespace, name)
		}
	}
	waitPending := func(ctx context.Context) error {
		return tutorial.WaitPending(ctx, d.kube, tutorial.Namespace, tutorial.Green)
	}
	const (
		publicDSN  = `postgresql://doadmin:PASSWORD@db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require`
		rolloutFmt = "kubectl rollout status deployment/%s -n production --timeout=90s"
	)
	return []step{
		{name: "cluster access", title: "Verify cluster access", command: "kubectl get nodes", expect: expectOK},
		{name: "namespace", title: "Create the namespace", command: "kubectl create namespace production", expect: expectOK},
		{name: "database Secret", title: "Create the Secret with the database connection string (" + d.db.shown + ")",
			command: `kubectl create secret generic db-credentials -n production --from-literal=url="$DATABASE_URL"`, expect: expectOK},
		{name: "deploy blue", title: "Deploy blue, the live version", command: "kubectl apply -f app-blue.yaml", expect: expectOK},
		{name: "deploy green (pods Pending)", title: "Deploy green, the new release: here its pods cannot be scheduled (a nodeSelector no node has)",
			command: "kubectl apply -f app-green.yaml", expect: expectOK},
		{name: "Services", title: "Create the Services", command: "kubectl apply -f services.yaml", expect: expectOK},
		{name: "Gateway", title: "Create the Gateway (no controller here; nothing needs its address)", command: "kubectl apply -f gateway.yaml", expect: expectOK},
		// The guard checks creates too: the route to blue goes in once blue
		// serves (a GitOps tool would retry it until then).
		{name: "wait for blue", title: "Wait for blue", command: fmt.Sprintf(rolloutFmt, tutorial.Blue), expect: expectOK, then: waitServing(tutorial.Blue)},
		{name: "HTTPRoute to blue", title: "Create the HTTPRoute: all traffic to blue (checked like a switch)", command: "kubectl apply -f httproute.yaml", expect: expectOK},
		{name: "green is 0/2", title: "Check both Deployments: green is 0/2", command: "kubectl get deployments -n production -l app=myapp", expect: expectOK, then: waitPending},
		{name: "where does traffic go?", title: "Where does traffic go? (the tutorial's check)", command: tutorial.BackendCommand, expect: tutorial.Blue},

		{name: "CUTOVER, green not Ready", title: "Cut over to green while green is not Ready", command: tutorial.CutoverCommand, expect: expectDenied},
		{name: "where does traffic go?", title: "Where does traffic go? (the tutorial's check)", command: tutorial.BackendCommand, expect: tutorial.Blue},

		{name: "fix green", title: "Fix green: drop the nodeSelector so its pods run",
			command: `kubectl patch deployment app-green -n production --type=json -p='[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]'`, expect: expectOK},
		{name: "wait for green", title: "Wait for green", command: fmt.Sprintf(rolloutFmt, tutorial.Green), expect: expectOK, then: waitServing(tutorial.Green)},

		{name: "Secret: public hostname", title: "A failed variant: the Secret now holds the database's public hostname",
			command: `kubectl create secret generic db-credentials -n production --from-literal=url='` + publicDSN + `' --dry-run=client -o yaml | kubectl replace -f -`, expect: expectOK},
		{name: "CUTOVER, public DB hostname", title: "Cut over to green, whose pods would use the public hostname", command: tutorial.CutoverCommand, expect: expectDenied},
		{name: "where does traffic go?", title: "Where does traffic go? (the tutorial's check)", command: tutorial.BackendCommand, expect: tutorial.Blue},
		{name: "Secret: private again", title: "Put the private connection string back",
			command: `kubectl create secret generic db-credentials -n production --from-literal=url="$DATABASE_URL" --dry-run=client -o yaml | kubectl replace -f -`, expect: expectOK},

		{name: "CUTOVER, green Ready", title: "Cut over to green: Ready, with endpoints and a reachable database", command: tutorial.CutoverCommand, expect: expectAllowed},
		{name: "where does traffic go?", title: "Where does traffic go? (the tutorial's check)", command: tutorial.BackendCommand, expect: tutorial.Green},

		{name: "scale blue to zero", title: "Green is stable: scale blue to zero to save resources", command: tutorial.ScaleBlueDownCommand, expect: expectOK},
		{name: "ROLLBACK, blue at zero", title: "Roll back to blue, which has no pods", command: tutorial.RollbackCommand, expect: expectDenied},
		{name: "where does traffic go?", title: "Where does traffic go? (the tutorial's check)", command: tutorial.BackendCommand, expect: tutorial.Green},

		{name: "scale blue up", title: "Bring blue back", command: tutorial.ScaleBlueUpCommand, expect: expectOK},
		{name: "wait for blue", title: "Wait for blue", command: fmt.Sprintf(rolloutFmt, tutorial.Blue), expect: expectOK, then: waitServing(tutorial.Blue)},
		{name: "ROLLBACK, blue Ready", title: "Roll back to blue", command: tutorial.RollbackCommand, expect: expectAllowed},
		{name: "where does traffic go?", title: "Where does traffic go? (the tutorial's check)", command: tutorial.BackendCommand, expect: tutorial.Blue},

		{name: "CutoverDenied Events", title: "The denials, as Events on the route", command: "kubectl get events -n production --field-selector reason=CutoverDenied", expect: expectOK},
	}
}

// do runs one step, prints it and what came of it, and returns what it did.
func (d *demo) do(ctx context.Context, n int, s step) (string, error) {
	d.printf("\n%d. %s\n   $ %s\n", n, s.title, s.command)
	r := d.kubectl.Shell(ctx, s.command)
	for _, line := range strings.Split(strings.TrimRight(r.Output, "\n"), "\n") {
		if line != "" {
			d.printf("     %s\n", line)
		}
	}
	got := verdict(r, s.expect)
	switch {
	case got == s.expect && s.expect == expectDenied:
		d.printf("   → denied by cutover-guard, as expected\n")
	case got == s.expect && s.expect == expectAllowed:
		d.printf("   → allowed, as expected\n")
	case got != s.expect:
		d.printf("   ✗ expected %s, got %s\n", s.expect, got)
		return got, nil
	}
	if s.then != nil {
		if err := s.then(ctx); err != nil {
			return "error", err
		}
	}
	return got, nil
}

// verdict names what a command did: denied (by the guard), allowed (the
// tutorial's "patched"), ok, an error, or for the tutorial's backend check
// what it printed.
func verdict(r *tutorial.Result, want string) string {
	switch {
	case r.Denied() && strings.Contains(r.Output, `.cutover-guard.dev" denied the request`):
		return expectDenied
	case !r.OK():
		return fmt.Sprintf("error (exit %d)", r.ExitCode)
	case strings.TrimSpace(r.Output) == tutorial.PatchedOutput:
		return expectAllowed
	case strings.HasSuffix(strings.TrimSpace(r.Output), "\n"+tutorial.PatchedOutput):
		return "allowed, with warnings"
	case want == expectOK || want == expectAllowed || want == expectDenied:
		return expectOK
	default:
		return r.Stdout
	}
}

func (d *demo) summary(total int) {
	d.printf("\nSummary\n\n")
	d.printf("  %-3s %-28s %-10s %-10s %s\n", "#", "step", "expected", "got", "command")
	for i, row := range d.rows {
		got := row.got
		if got != row.step.expect {
			got = "✗ " + got
		}
		d.printf("  %-3d %-28s %-10s %-10s %s\n", i+1, row.step.name, row.step.expect, got, row.step.command)
	}
	if len(d.rows) < total {
		d.printf("  (%d later steps not run)\n", total-len(d.rows))
	}
}

// printKept tells how to use and stop a demo kept running.
func (d *demo) printKept(pid int) {
	d.printf("\nThe control plane and cutover-guard keep running (%s=1). Try it:\n\n", keepEnv)
	d.printf("  export KUBECONFIG=%s\n", d.cluster.Kubeconfig)
	d.printf("  export PATH=%s:$PATH\n", d.cluster.BinDir)
	d.printf("  cd %s\n", d.kubectl.Dir)
	d.printf("  %s\n", tutorial.CutoverCommand)
	d.printf("\nGuard log: %s\n", d.guard.LogPath)
	d.printf("Stop everything with: kill %d   (or run make demo again)\n", pid)
}

// cleanup stops everything the demo started; it may be called more than once.
func (d *demo) cleanup() {
	if d.guard != nil {
		if err := d.guard.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		d.guard = nil
	}
	if d.cluster != nil {
		if err := d.cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		d.cluster = nil
	}
	if d.db != nil {
		d.db.stop()
		d.db = nil
	}
	if d.work != "" && !d.keepFiles {
		_ = os.RemoveAll(d.work)
	}
	d.work = ""
}

func relTo(base, path string) string {
	if r, err := filepath.Rel(base, path); err == nil {
		return r
	}
	return path
}
