// Command demo-gitops (make demo-gitops) narrates the tutorial's release the
// GitOps way: Flux's source-controller and kustomize-controller sync the
// tutorial's objects from a Git repository on loopback into a local control
// plane, and the guard judges every route change kustomize-controller
// applies. Each step is a commit (or a change to the cluster that Git does
// not hold), then what Flux and the guard made of it. It exits non-zero if a
// step does not behave as narrated; DEMO_KEEP=1 keeps everything running at
// the end.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/flux"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

const (
	appNamespace  = "shop"
	fluxNamespace = "flux-system"
	applier       = "release-applier"
	applierUser   = "system:serviceaccount:" + fluxNamespace + ":" + applier
	localPostgres = "127.0.0.1:5432"
	dsn           = "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	interval      = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx))
}

type demo struct {
	stack *tutorial.Stack
	flux  *flux.Flux
	repo  *flux.Repo
	steps []string
	ok    bool
}

func say(format string, args ...any) { fmt.Printf(format+"\n", args...) }

func run(ctx context.Context) int {
	began := time.Now()
	say("cutover-guard demo: the tutorial's blue-green release through Flux, guarded.\n")
	d := &demo{ok: true}
	if err := d.start(ctx); err != nil {
		say("\ndemo-gitops: %v", err)
		d.stop(true)
		return 1
	}
	err := d.narrate(ctx)
	if err != nil {
		say("   ✗ %v", err)
		d.ok = false
	}
	say("\nSummary:")
	for _, s := range d.steps {
		say("  %s", s)
	}
	say("\nThe demo took %s.", time.Since(began).Round(time.Second))
	if os.Getenv("DEMO_KEEP") == "1" {
		say("\nDEMO_KEEP=1: everything keeps running; KUBECONFIG=%s. Press Ctrl-C to stop.", d.stack.Cluster.Kubeconfig)
		<-ctx.Done()
	}
	d.stop(!d.ok)
	if !d.ok {
		say("\nA step did not behave as narrated; logs kept in %s.", d.stack.Dir)
		return 1
	}
	say("\nEvery step behaved as narrated.")
	return 0
}

func (d *demo) start(ctx context.Context) error {
	toolsDir, skip := tutorial.Preflight(localPostgres)
	if skip != "" {
		return fmt.Errorf("%s (make demo-gitops builds the tools; the local PostgreSQL must answer on %s)", skip, localPostgres)
	}
	if missing := flux.Missing(toolsDir); len(missing) > 0 {
		return fmt.Errorf("flux not built (make tools): missing %s", strings.Join(missing, ", "))
	}
	if why := flux.GitMissing(); why != "" {
		return fmt.Errorf("%s", why)
	}
	say("Starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok) and the guard...")
	var err error
	d.stack, err = tutorial.StartStack(ctx, tutorial.StackOptions{
		Name: "demo-gitops", ToolsDir: toolsDir, DSN: dsn, DBTimeout: time.Second,
		GuardArgs: []string{"--override-groups=" + applierUser},
	})
	if err != nil {
		return err
	}
	dir := filepath.Join(d.stack.Dir, "gitops")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if d.repo, err = flux.NewRepo(dir); err != nil {
		return err
	}
	say("Starting Flux's source-controller and kustomize-controller; the Git repository is served at %s.", d.repo.URL)
	d.flux, err = flux.Start(ctx, flux.Options{ToolsDir: toolsDir, Config: d.stack.Cluster.Config, Kubeconfig: d.stack.Cluster.Kubeconfig, Dir: dir})
	if err != nil {
		return err
	}
	return flux.Prepare(ctx, d.stack.Kube, appNamespace, fluxNamespace, applier, dsn)
}

func (d *demo) stop(keep bool) {
	if d.flux != nil {
		_ = d.flux.Stop()
	}
	if d.repo != nil {
		_ = d.repo.Close()
	}
	if d.stack != nil {
		_ = d.stack.Teardown(keep, os.Stdout)
	}
}

func (d *demo) commit(r flux.Release, message string) (string, error) {
	files, err := r.Files(appNamespace)
	if err != nil {
		return "", err
	}
	sha, err := d.repo.Commit(files, message)
	if err != nil {
		return "", err
	}
	say("   git commit -m %q   # %s", message, sha[:12])
	return sha, nil
}

func (d *demo) wait(ctx context.Context, what string, done func(flux.Status) bool) (flux.Status, error) {
	st, err := flux.WaitKustomization(ctx, d.stack.Kube, fluxNamespace, "app", 3*time.Minute, done)
	if err != nil {
		return st, fmt.Errorf("waiting for %s: %w", what, err)
	}
	return st, nil
}

func (d *demo) backends(ctx context.Context) string {
	var r gwv1.HTTPRoute
	if err := d.stack.Kube.Get(ctx, client.ObjectKey{Namespace: appNamespace, Name: tutorial.Route}, &r); err != nil {
		return err.Error()
	}
	var out []string
	for _, ref := range r.Spec.Rules[0].BackendRefs {
		s := string(ref.Name)
		if ref.Weight != nil && len(r.Spec.Rules[0].BackendRefs) > 1 {
			s += fmt.Sprintf("=%d", *ref.Weight)
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func (d *demo) done(step, outcome string) {
	d.steps = append(d.steps, fmt.Sprintf("%-58s %s", step, outcome))
	say("   ✓ %s", outcome)
}

func (d *demo) narrate(ctx context.Context) error {
	kube := d.stack.Kube
	applied := func(sha string) func(flux.Status) bool {
		return func(s flux.Status) bool {
			return s.Ready == metav1.ConditionTrue && s.LastApplied == flux.Revision(sha)
		}
	}
	denied := func(sha, because string) func(flux.Status) bool {
		return func(s flux.Status) bool {
			return s.LastAttempted == flux.Revision(sha) && s.Ready == metav1.ConditionFalse && strings.Contains(s.Message, because)
		}
	}

	say("\n1. The first commit: blue serves, green is deployed (its pods need a node label no node has yet).")
	first, err := d.commit(flux.Release{GreenReplicas: tutorial.Replicas, Backends: []flux.Backend{{Name: tutorial.Blue}}}, "release: app-blue serves, app-green deployed")
	if err != nil {
		return err
	}
	for _, o := range []client.Object{
		flux.GitRepository(fluxNamespace, "app", d.repo.URL, interval),
		flux.Kustomization(fluxNamespace, "app", "app", flux.KustomizationOptions{Interval: interval, RetryInterval: interval, ServiceAccountName: applier}),
	} {
		if err := kube.Create(ctx, o); err != nil {
			return err
		}
	}
	say("   A GitRepository and a Kustomization (interval and retryInterval 5s) sync it.")
	if _, err := d.wait(ctx, "the first sync", applied(first)); err != nil {
		return err
	}
	d.done("1. first sync (route created, checked)", "applied; route -> "+d.backends(ctx))

	say("\n2. The tutorial's cutover, as a commit: the route to app-green, which is 0/2 Ready.")
	cutover, err := d.commit(flux.Release{GreenReplicas: tutorial.Replicas, Backends: []flux.Backend{{Name: tutorial.Green}}}, "cutover: app-green")
	if err != nil {
		return err
	}
	st, err := d.wait(ctx, "the denial", denied(cutover, "deployment app-green is not ready"))
	if err != nil {
		return err
	}
	say("   kubectl get kustomization app -n %s: Ready=%s, lastAppliedRevision %s", fluxNamespace, st.Ready, st.LastApplied)
	say("   its message: %s", firstLine(st.Message))
	if st.LastApplied != flux.Revision(first) || d.backends(ctx) != tutorial.Blue {
		return fmt.Errorf("after the denial: applied %s, route -> %s", st.LastApplied, d.backends(ctx))
	}
	d.done("2. cutover to an unready green", "denied by the guard; route stays -> app-blue")

	say("\n3. Green becomes Ready (its node label appears; no new commit). Flux retries the same commit.")
	if err := flux.LabelNode(ctx, kube, d.stack.Cluster.NodeName, flux.GreenNode); err != nil {
		return err
	}
	if err := tutorial.WaitServing(ctx, kube, appNamespace, tutorial.Green); err != nil {
		return err
	}
	if _, err := d.wait(ctx, "the retry", applied(cutover)); err != nil {
		return err
	}
	d.done("3. retry once green is Ready", "applied; route -> "+d.backends(ctx))

	say("\n4. Roll back and scale green to zero, then a canary that sends 10%% to that green.")
	rollback, err := d.commit(flux.Release{GreenReplicas: 0, Backends: []flux.Backend{{Name: tutorial.Blue, Weight: 100}, {Name: tutorial.Green}}}, "rollback: app-blue, app-green scaled to zero")
	if err != nil {
		return err
	}
	if _, err := d.wait(ctx, "the rollback", applied(rollback)); err != nil {
		return err
	}
	canary := flux.Release{GreenReplicas: 0, Backends: []flux.Backend{{Name: tutorial.Blue, Weight: 90}, {Name: tutorial.Green, Weight: 10}}}
	sha, err := d.commit(canary, "canary: 10% to app-green")
	if err != nil {
		return err
	}
	st, err = d.wait(ctx, "the canary's denial", denied(sha, "scaled to zero"))
	if err != nil {
		return err
	}
	say("   its message: %s", firstLine(st.Message))
	d.done("4. canary weight to a green at zero", "denied; route stays -> "+d.backends(ctx))

	say("\n5. Break glass through Git: the same commit with cutover-guard.dev/override, applied as %s (in --override-groups).", applierUser)
	canary.Override = "INC-4711: app-green verified by hand"
	sha, err = d.commit(canary, "break glass: INC-4711")
	if err != nil {
		return err
	}
	if _, err := d.wait(ctx, "the override", applied(sha)); err != nil {
		return err
	}
	d.done("5. override committed to Git", "applied and audited; route -> "+d.backends(ctx))
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
