package e2e_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// Users of TestDenialTellsEachRequesterWhatTheyMayRead: both may patch
// the tutorial's route; only dbOwner may get its Secret.
const (
	routeEditor = "route-editor"
	dbOwner     = "db-owner"
)

// The confused deputy, through the real API server, kubectl impersonating
// users and the real binary: green's database rejects the password in the
// Secret db-credentials. A user who may patch the route but not read that
// Secret is told which check failed and which Secret to ask about, and
// nothing the guard read from it (host, port, user); a user who may read
// the Secret is told all of it; the Events of both denials, which the view
// role reads, are redacted; the guard's log keeps the detail.
func TestDenialTellsEachRequesterWhatTheyMayRead(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	pg := testdb.StartPostgres(t, testdb.PostgresOptions{Password: pgPassword})
	dsn := "postgresql://" + url.UserPassword("postgres", wrongPassword).String() + "@" + pg.Addr() + "/shopdb?sslmode=disable"
	e.reset(t, world{greenReady: true, dsn: dsn})
	e.grantDisclosureRBAC(t)

	const src = "secret production/db-credentials key url"
	// The full text, but for "(checked 2s ago)" when the second denial
	// comes from the first one's probe.
	full := "service production/app-green: database at " + pg.Addr() + " rejected the password for user postgres"
	redacted := "service production/app-green: database check failed (DatabaseAuthFailed) for the connection string in " + src +
		"; you may not read secret production/db-credentials: ask its owner, or see the guard's log"
	read := []string{pg.Addr(), portOf(pg.Addr()), "user postgres", "shopdb"}

	for _, tc := range []struct {
		user string
		want []string
		full bool
	}{
		{user: routeEditor, want: []string{redacted}},
		{user: dbOwner, want: []string{full, "; check the password in " + src}, full: true},
	} {
		t.Run(tc.user, func(t *testing.T) {
			// A create is checked, and blue reads the Secret too: the route
			// is made while it holds a working connection string.
			if err := tutorial.SetSecret(t.Context(), e.kube, tutorial.Namespace, postgresDSN); err != nil {
				t.Fatal(err)
			}
			e.recreateRoute(t, e.manifests.Route.DeepCopy())
			if err := tutorial.SetSecret(t.Context(), e.kube, tutorial.Namespace, dsn); err != nil {
				t.Fatal(err)
			}
			route := e.route(t)
			r := e.sh(t, strings.Replace(tutorial.CutoverCommand, "kubectl ", "kubectl --as="+tc.user+" ", 1))
			requireDenied(t, r, tutorial.HTTPRouteWebhook, tc.want...)
			if !tc.full {
				for _, w := range read {
					if strings.Contains(r.Output, w) {
						t.Errorf("the denial to %s, who may not read the Secret, shows %q:\n%s", tc.user, w, r.Output)
					}
				}
			}
			e.checkBackend(t, tutorial.Blue)

			ev := e.waitDeniedEvent(t, "HTTPRoute", tutorial.Route, string(route.UID), route.ResourceVersion)
			if !strings.Contains(ev.Message, redacted) {
				t.Errorf("Event of the denial to %s: %q, want the redacted %q", tc.user, ev.Message, redacted)
			}
			for _, w := range read {
				if strings.Contains(ev.Message, w) {
					t.Errorf("Event of the denial to %s shows %q: %s", tc.user, w, ev.Message)
				}
			}
		})
	}

	// Every Event, as the view role would list them.
	events := e.kubectl().Run(ctx, "get", "events", "-n", tutorial.Namespace, "-o", "yaml")
	if !events.OK() || !strings.Contains(events.Stdout, "DatabaseAuthFailed") {
		t.Fatalf("kubectl get events shows no redacted denial:\n%s", events)
	}
	for _, w := range []string{pg.Addr(), "user postgres"} {
		if strings.Contains(events.Stdout, w) {
			t.Errorf("an Event shows %q", w)
		}
	}
	if log := e.guard.Log(); !strings.Contains(log, "rejected the password for user postgres") {
		t.Error("the guard's log lacks the detail it withheld")
	}
}

// grantDisclosureRBAC lets routeEditor and dbOwner get and patch the
// tutorial's routes, and dbOwner get the Secret db-credentials, and waits
// until the API server's authorizer says so.
func (e *env) grantDisclosureRBAC(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	user := func(n string) rbacv1.Subject {
		return rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: n}
	}
	objs := []client.Object{
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "e2e-route-editor"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{gwv1.GroupName}, Resources: []string{"httproutes"}, Verbs: []string{"get", "patch"}}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "e2e-route-editor"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "e2e-route-editor"},
			Subjects:   []rbacv1.Subject{user(routeEditor), user(dbOwner)},
		},
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "e2e-db-owner"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"db-credentials"}, Verbs: []string{"get"}}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: tutorial.Namespace, Name: "e2e-db-owner"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "e2e-db-owner"},
			Subjects:   []rbacv1.Subject{user(dbOwner)},
		},
	}
	for _, obj := range objs {
		if err := tutorial.CreateOrReplace(ctx, e.kube, obj); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, obj := range objs {
			if err := client.IgnoreNotFound(e.kube.Delete(context.Background(), obj)); err != nil {
				t.Errorf("delete %s: %v", obj.GetName(), err)
			}
		}
	})
	for _, c := range []struct {
		user string
		args []string
		want string
	}{
		{routeEditor, []string{"patch", "httproutes"}, "yes"},
		{dbOwner, []string{"patch", "httproutes"}, "yes"},
		{dbOwner, []string{"get", "secret/db-credentials"}, "yes"},
		{routeEditor, []string{"get", "secret/db-credentials"}, "no"},
	} {
		var last *tutorial.Result
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			last = e.kubectl().Run(ctx, append([]string{"--as=" + c.user, "auth", "can-i", "-n", tutorial.Namespace}, c.args...)...)
			return strings.TrimSpace(last.Stdout) == c.want, nil
		})
		if err != nil {
			t.Fatalf("kubectl auth can-i --as=%s %v: want %s: %v\n%s", c.user, c.args, c.want, err, last)
		}
	}
}
