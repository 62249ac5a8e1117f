package e2e_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The local database servers `make test` expects (.ci/run starts them).
const (
	localPostgres = "127.0.0.1:5432"
	localMariaDB  = "127.0.0.1:3306"
	// postgresDSN and mysqlDSN reach them as the tutorial's Secret would.
	postgresDSN = "postgresql://postgres@127.0.0.1:5432/test?sslmode=require"
	mysqlDSN    = "mysql://root@127.0.0.1:3306/test"
)

// dbTimeout is the guard's --db-timeout.
const dbTimeout = time.Second

// One control plane and one guard serve every test in the package; TestMain
// stops them. Tests run one after another and each sets the state it needs
// (see env.reset), so none depends on another.
var shared tutorial.Shared[*env]

// env is the shared control plane, guard and kubectl.
type env struct {
	stack      *tutorial.Stack
	cluster    *cluster.Cluster
	guard      *tutorial.Guard
	kube       client.Client
	manifests  *tutorial.Manifests
	dir        string // the guard's files, kubectl's home, manifest files
	transcript *tutorial.Transcript
}

func TestMain(m *testing.M) {
	os.Exit(shared.Main(m, func(e *env) *tutorial.Stack { return e.stack }))
}

// setup returns the shared environment with the tutorial's objects in
// place, starting it on first use; it skips (or, with
// CUTOVER_GUARD_TEST_REQUIRED=1, fails) when the tools or the local
// databases are missing.
func setup(t *testing.T) *env {
	t.Helper()
	e := shared.Get(t, start)
	e.guard.LogOnFailure(t, 40)
	return e
}

// start brings up the environment, or says why it cannot (skip).
func start() (_ *env, skip string, _ error) {
	toolsDir, skip := tutorial.Preflight(localPostgres, localMariaDB)
	if skip != "" {
		return nil, skip, nil
	}
	s, err := tutorial.StartStack(context.Background(), tutorial.StackOptions{
		Name: "e2e", ToolsDir: toolsDir, DSN: postgresDSN, DBTimeout: dbTimeout, WriteManifests: true,
		// The guard reads as installed: its ServiceAccount, the shipped
		// ClusterRole; a permission the checks need and the role lacks
		// fails here.
		AsInstalled: true,
		// Details too: no secret may appear at any level. The storm tests
		// drive 50 clients at one route to judge verdicts under
		// concurrency; the per-namespace bound on checks in flight (tested
		// in package checks against the real prober) would answer most of
		// them NamespaceBusy, so it is raised here.
		GuardArgs: []string{"--zap-log-level=debug", "--override-groups=" + overrideGroup, "--max-checks-per-namespace=64"},
	})
	if err != nil {
		return nil, "", err
	}
	return &env{stack: s, cluster: s.Cluster, guard: s.Guard, kube: s.Kube, dir: s.Dir,
		transcript: &tutorial.Transcript{}, manifests: tutorial.MustLoad()}, "", nil
}

// kubectl returns a kubectl that runs in the folder of the tutorial's
// manifest files and records into the package's transcript.
func (e *env) kubectl() *tutorial.Kubectl {
	return &tutorial.Kubectl{
		Binary:     e.cluster.Kubectl,
		Kubeconfig: e.cluster.Kubeconfig,
		Dir:        filepath.Join(e.dir, "manifests"),
		Home:       filepath.Join(e.dir, "kubectl"),
		Transcript: e.transcript,
	}
}

// sh runs a command line as the tutorial prints it, with extra
// environment, and logs it.
func (e *env) sh(t *testing.T, line string, extra ...string) *tutorial.Result {
	t.Helper()
	r := e.kubectl().Shell(t.Context(), line, extra...)
	t.Logf("%s", r)
	return r
}

// world is the state a scenario starts from.
type world struct {
	// greenReady: green rolled out and serving; otherwise its pods are
	// held Pending (0/2 ready).
	greenReady bool
	// dsn is the Secret's connection string; default postgresDSN.
	dsn string
}

// reset puts the tutorial's objects into w: blue serving 2 replicas, green
// as asked, the Secret, and the route created afresh from httproute.yaml
// (to app-blue, with a new resourceVersion).
func (e *env) reset(t *testing.T, w world) {
	t.Helper()
	ctx := t.Context()
	if w.dsn == "" {
		w.dsn = postgresDSN
	}
	// The route is created while the Secret holds a working connection
	// string (the guard checks creates, and blue reads the Secret too);
	// w.dsn goes in after.
	if err := tutorial.SetSecret(ctx, e.kube, tutorial.Namespace, postgresDSN); err != nil {
		t.Fatal(err)
	}
	if err := e.manifests.ServeColors(ctx, e.kube, w.greenReady); err != nil {
		t.Fatal(err)
	}
	e.recreateRoute(t, e.manifests.Route.DeepCopy())
	if w.dsn != postgresDSN {
		if err := tutorial.SetSecret(ctx, e.kube, tutorial.Namespace, w.dsn); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) recreateRoute(t *testing.T, route *gwv1.HTTPRoute) {
	t.Helper()
	if err := tutorial.Recreate(t.Context(), e.kube, route); err != nil {
		t.Fatal(err)
	}
}

// route returns the tutorial's route as the API server has it.
func (e *env) route(t *testing.T) *gwv1.HTTPRoute {
	t.Helper()
	var r gwv1.HTTPRoute
	if err := e.kube.Get(t.Context(), client.ObjectKey{Namespace: tutorial.Namespace, Name: tutorial.Route}, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// checkBackend runs the tutorial's own check of where traffic goes and
// requires it to print want, and want to be what the API server holds.
func (e *env) checkBackend(t *testing.T, want string) {
	t.Helper()
	r := e.kubectl().Shell(t.Context(), tutorial.BackendCommand)
	if !r.OK() {
		t.Fatalf("tutorial's backend check failed:\n%s", r)
	}
	truth := ""
	if rules := e.route(t).Spec.Rules; len(rules) > 0 && len(rules[0].BackendRefs) > 0 {
		truth = string(rules[0].BackendRefs[0].Name)
	}
	if r.Stdout != want || truth != want {
		t.Fatalf("backend: tutorial's check printed %q, route holds %q, want %q", r.Stdout, truth, want)
	}
}

// requireDenied requires r to be a denial by the webhook named hook whose
// message contains every one of want.
func requireDenied(t *testing.T, r *tutorial.Result, hook string, want ...string) {
	t.Helper()
	if !r.Denied() {
		t.Fatalf("want a denial, got:\n%s", r)
	}
	if prefix := `admission webhook "` + hook + `" denied the request: `; !strings.Contains(r.Output, prefix) {
		t.Errorf("output lacks %q:\n%s", prefix, r.Output)
	}
	for _, w := range want {
		if !strings.Contains(r.Output, w) {
			t.Errorf("denial lacks %q:\n%s", w, r.Output)
		}
	}
}

// requireOutput requires r to have succeeded and printed exactly want (one line).
func requireOutput(t *testing.T, r *tutorial.Result, want string) {
	t.Helper()
	if !r.OK() || r.Output != want+"\n" {
		t.Fatalf("want exit 0 and output %q, got:\n%s", want, r)
	}
}

// event is what a test reads of an Event.
type event struct {
	Type           string `json:"type"`
	Reason         string `json:"reason"`
	Message        string `json:"message"`
	InvolvedObject struct {
		Kind            string `json:"kind"`
		Name            string `json:"name"`
		UID             string `json:"uid"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"involvedObject"`
}

// deniedEvents lists the CutoverDenied Events on a route with kubectl.
func (e *env) deniedEvents(t *testing.T, kind, name string) []event {
	t.Helper()
	r := e.kubectl().Run(t.Context(), "get", "events", "-n", tutorial.Namespace, "-o", "json",
		"--field-selector", "involvedObject.kind="+kind+",involvedObject.name="+name+",reason=CutoverDenied")
	if !r.OK() {
		t.Fatalf("kubectl get events:\n%s", r)
	}
	var list struct{ Items []event }
	if err := json.Unmarshal([]byte(r.Stdout), &list); err != nil {
		t.Fatalf("kubectl get events output: %v\n%s", err, r.Stdout)
	}
	return list.Items
}

// waitDeniedEvent waits for a CutoverDenied Event on the route with uid
// at resourceVersion rv, and returns it.
func (e *env) waitDeniedEvent(t *testing.T, kind, name, uid, rv string) event {
	t.Helper()
	var found *event
	var seen []event
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		seen = e.deniedEvents(t, kind, name)
		for i, ev := range seen {
			if ev.InvolvedObject.UID == uid && ev.InvolvedObject.ResourceVersion == rv {
				found = &seen[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no CutoverDenied Event on %s %s (uid %s, resourceVersion %s): %v; events: %+v", kind, name, uid, rv, err, seen)
	}
	return *found
}

// deployment returns the tutorial's Deployment name as the API server has it.
func (e *env) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := e.kube.Get(t.Context(), client.ObjectKey{Namespace: tutorial.Namespace, Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}
