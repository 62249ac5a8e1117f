package e2e_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// Passwords of the throwaway servers, and wrong or badly written ones, with
// the characters the tutorial says to url-encode. None may ever be printed.
const (
	pgPassword      = "S3cret-p@ss:word/pg"
	mariaDBPassword = "S3cret-p@ss:word/my"
	wrongPassword   = "Wr0ng-p@ss:word/42"
	// unencodedPassword is written into a DSN as is: the tutorial's mistake.
	unencodedPassword = "Unenc0ded-p@ss:w/rd"
)

// Each way green's database can fail, written into the tutorial's Secret and
// met by the tutorial's cutover: denied with the guard's own words, the route
// stays on blue, an Event records it, and no password is ever shown.
func TestDatabaseFailureModes(t *testing.T) {
	e := setup(t)
	pg := testdb.StartPostgres(t, testdb.PostgresOptions{Password: pgPassword})
	maria := testdb.StartMariaDB(t, testdb.MariaDBOptions{Password: mariaDBPassword})
	blackhole := testdb.Blackhole(t)
	closed := testdb.ClosedPort(t)
	// userinfo renders user:password as a DSN holds it, url-encoded.
	userinfo := func(user, password string) string { return url.UserPassword(user, password).String() }
	const in = "; "
	const src = "secret production/db-credentials key url"

	tests := map[string]struct {
		dsn string
		// finding is the denial's line for green's database, in full.
		finding string
		// within bounds the kubectl command's wall time, if set.
		within time.Duration
	}{
		"a wrong password (PostgreSQL)": {
			dsn:     "postgresql://" + userinfo("postgres", wrongPassword) + "@" + pg.Addr() + "/app?sslmode=disable",
			finding: "database at " + pg.Addr() + " rejected the password for user postgres" + in + "check the password in " + src,
		},
		"a wrong password (MySQL)": {
			dsn:     "mysql://" + userinfo("app", wrongPassword) + "@" + maria.Addr() + "/app",
			finding: "database at " + maria.Addr() + " rejected the password for user app" + in + "check the password in " + src,
		},
		"a database that does not exist (PostgreSQL)": {
			dsn:     "postgresql://" + userinfo("postgres", pgPassword) + "@" + pg.Addr() + "/nosuchdb?sslmode=disable",
			finding: "database nosuchdb does not exist at " + pg.Addr() + in + "create it, or fix the database name in " + src,
		},
		"a database that does not exist (MySQL)": {
			dsn:     "mysql://" + userinfo("app", mariaDBPassword) + "@" + maria.Addr() + "/nosuchdb",
			finding: "database nosuchdb does not exist at " + maria.Addr() + in + "create it, or fix the database name in " + src,
		},
		"nothing listening at the address": {
			dsn:     "postgresql://" + userinfo("postgres", pgPassword) + "@" + closed + "/app?sslmode=require",
			finding: "database at " + closed + " is not reachable" + in + "check that the cluster is in the database's Trusted sources, and that " + src + " names the database's private hostname and port",
		},
		"a listener that never answers, denied within the db timeout": {
			dsn:     "postgresql://" + userinfo("postgres", pgPassword) + "@" + blackhole + "/app?sslmode=require",
			finding: "database at " + blackhole + " is not reachable" + in + "check that the cluster is in the database's Trusted sources, and that " + src + " names the database's private hostname and port",
			// The API server waits up to 10 s; the probe must give up after 1 s.
			within: dbTimeout + 3*time.Second,
		},
		"sslmode=require against a server without TLS": {
			dsn:     pg.URL("postgresql", "sslmode=require"),
			finding: "database at " + pg.Addr() + " does not offer TLS but the connection string requires it (sslmode=require)" + in + "enable TLS on the database, or change the TLS setting in " + src,
		},
		"a password with special characters not url-encoded": {
			dsn: "postgresql://postgres:" + unencodedPassword + "@" + pg.Addr() + "/app?sslmode=disable",
			finding: "the database url in " + src + " has a password with special characters that are not url-encoded" + in +
				"url-encode the password: @ -> %40, : -> %3A, / -> %2F, ? -> %3F, # -> %23, % -> %25 (e.g. p@ss:word/123 -> p%40ss%3Aword%2F123)",
		},
		"a public address (127.0.0.2 is outside --private-cidrs)": {
			dsn:     "postgresql://" + userinfo("postgres", pgPassword) + "@127.0.0.2:" + portOf(pg.Addr()) + "/app?sslmode=require",
			finding: "database host 127.0.0.2 is not a private address" + in + "use the database's private network hostname in " + src + ", or add its range to --private-cidrs",
		},
		"the DigitalOcean public hostname": {
			dsn: "postgresql://" + userinfo("doadmin", pgPassword) + "@db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require",
			finding: "database host db-postgresql-nyc1-12345.db.ondigitalocean.com is the public hostname" + in +
				"use the private hostname private-db-postgresql-nyc1-12345.db.ondigitalocean.com from the Private network tab in " + src,
		},
	}

	e.reset(t, world{greenReady: true})
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			// A fresh route per case, so that each denial gets its own
			// Event; created while blue's connection string still works
			// (blue and green read the same Secret, and creates are checked).
			if err := tutorial.SetSecret(t.Context(), e.kube, tutorial.Namespace, postgresDSN); err != nil {
				t.Fatal(err)
			}
			e.recreateRoute(t, e.manifests.Route.DeepCopy())
			route := e.route(t)
			if err := tutorial.SetSecret(t.Context(), e.kube, tutorial.Namespace, tc.dsn); err != nil {
				t.Fatal(err)
			}

			r := e.sh(t, tutorial.CutoverCommand)
			want := "service production/app-green: " + tc.finding
			requireDenied(t, r, tutorial.HTTPRouteWebhook, want)
			if strings.Contains(r.Output, "deployment app-green") || strings.Contains(r.Output, "endpoints") {
				t.Errorf("green is Ready, yet the denial blames it:\n%s", r.Output)
			}
			if tc.within > 0 && r.Took > tc.within {
				t.Errorf("the denial took %s, want at most %s", r.Took, tc.within)
			}
			e.checkBackend(t, tutorial.Blue)

			// The Event, which the view role reads, names the check and the
			// Secret, never what the guard read from it.
			ev := e.waitDeniedEvent(t, "HTTPRoute", tutorial.Route, string(route.UID), route.ResourceVersion)
			redacted := "service production/app-green: database check failed ("
			if ev.Type != "Warning" || !strings.Contains(ev.Message, redacted) || !strings.Contains(ev.Message, "for the connection string in "+src+"; you may not read secret production/db-credentials") {
				t.Errorf("Event: type %q message %q, want a Warning saying %q for %s", ev.Type, ev.Message, redacted, src)
			}
			if strings.Contains(ev.Message, tc.finding) {
				t.Errorf("Event carries what was read from the Secret: %s", ev.Message)
			}
		})
	}

	// No password, in any spelling, in anything the guard or kubectl said.
	events := e.kubectl().Run(t.Context(), "get", "events", "-n", tutorial.Namespace, "-o", "yaml")
	if !events.OK() || !strings.Contains(events.Stdout, "CutoverDenied") {
		t.Fatalf("kubectl get events shows no CutoverDenied Event:\n%s", events)
	}
	var outputs strings.Builder
	for _, r := range e.transcript.Runs() {
		outputs.WriteString(r.Output)
	}
	if !strings.Contains(outputs.String(), "rejected the password") {
		t.Fatal("the kubectl transcript lacks this test's denials")
	}
	guardLog := e.guard.Log()
	if !strings.Contains(guardLog, "DatabaseAuthFailed") {
		t.Fatal("the guard's log lacks this test's decisions")
	}
	for _, pw := range []string{pgPassword, mariaDBPassword, wrongPassword, unencodedPassword} {
		for _, spelled := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw), strings.TrimPrefix(url.UserPassword("", pw).String(), ":")} {
			for where, text := range map[string]string{
				"kubectl's output": outputs.String(),
				"the Events":       events.Stdout,
				"the guard's log":  guardLog,
			} {
				if strings.Contains(text, spelled) {
					t.Errorf("password %q appears in %s", spelled, where)
				}
			}
		}
	}
}

func portOf(addr string) string {
	_, port, _ := strings.Cut(addr, ":")
	return port
}
