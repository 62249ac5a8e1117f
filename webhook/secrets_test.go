package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"go.uber.org/zap/zapcore"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/cutover-guard/cutover-guard/checks"
	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
	"github.com/cutover-guard/cutover-guard/internal/faultproxy"
	"github.com/cutover-guard/cutover-guard/internal/testdb"
)

// The password every case uses; it holds each character the tutorial says
// to URL-encode, so a half-encoded echo would be caught too.
const knownPassword = "Kn0wn-p@ss:w/rd?#"

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// readyGreenWithSecretDSN is the tutorial's namespace with app-green Ready and
// its DATABASE_URL taken from Secret db-credentials key url.
func readyGreenWithSecretDSN(dsn string) []client.Object {
	objs := tutorialNamespace(true)
	for _, o := range objs {
		if d, ok := o.(*appsv1.Deployment); ok {
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db-credentials"}, Key: "url"},
			}}}
		}
	}
	return append(objs, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "db-credentials"},
		Data:       map[string][]byte{"url": []byte(dsn)},
	})
}

// TestNoSecretInAnyOutput drives the real handler and the real database
// prober through every failure mode with a known password and asserts the
// password and the DSN appear in no response, warning, Event, log line or
// metric.
func TestNoSecretInAnyOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts database servers")
	}
	pg := testdb.StartPostgres(t, testdb.PostgresOptions{Password: knownPassword})
	plain := pg.URL("postgresql", "sslmode=disable")
	withPassword := func(pw string) string {
		u, _ := url.Parse(plain)
		u.User = url.UserPassword(u.User.Username(), pw)
		return u.String()
	}
	withDB := func(db string) string {
		u, _ := url.Parse(plain)
		u.Path = "/" + db
		return u.String()
	}
	withHost := func(hostport string) string {
		u, _ := url.Parse(plain)
		u.Host = hostport
		return u.String()
	}
	encoded := url.UserPassword("postgres", knownPassword).String()
	faulty := func(o faultproxy.Options) string {
		p, err := faultproxy.Start(pg.Addr())
		if err != nil {
			t.Fatal(err)
		}
		p.Set(o)
		t.Cleanup(func() { _ = p.Close() })
		return withHost(p.Addr())
	}
	nxdomain := testdb.StartDNS(t, true).Resolver()

	cases := map[string]struct {
		dsn         string
		resolver    func(ctx context.Context, host string) ([]netip.Addr, error)
		wantAllowed bool
		wantReason  string
	}{
		"a proxy that never answers is denied": {dsn: faulty(faultproxy.Options{Fault: faultproxy.Blackhole}), wantReason: "DatabaseNoResponse"},
		"a reset as the connection opens is denied": {
			dsn: faulty(faultproxy.Options{Fault: faultproxy.ResetAfter}), wantReason: "DatabaseConnectionReset",
		},
		"a reset during the login is denied": {
			dsn: faulty(faultproxy.Options{Fault: faultproxy.ResetAfter, ResetAfterBytes: 4}), wantReason: "DatabaseConnectionReset",
		},
		"latency above the timeout is denied": {
			dsn: faulty(faultproxy.Options{Fault: faultproxy.Delay, Delay: 10 * time.Second}), wantReason: "DatabaseNoResponse",
		},
		"a server that closes the connection is denied": {dsn: withHost(closingListener(t)), wantReason: "DatabaseConnectionClosed"},
		"a host that does not resolve is denied": {
			dsn: withHost("db-green.private.cutover-guard.test:5432"), resolver: nxdomain, wantReason: "DatabaseHostUnresolvable",
		},
		"a reachable database is allowed":         {dsn: plain, wantAllowed: true},
		"a wrong password is denied":              {dsn: withPassword(knownPassword + "x"), wantReason: "DatabaseAuthFailed"},
		"a missing database is denied":            {dsn: withDB("nope"), wantReason: "DatabaseNotFound"},
		"nothing listening is denied":             {dsn: withHost(testdb.ClosedPort(t)), wantReason: "DatabaseConnectRefused"},
		"a listener that never answers is denied": {dsn: withHost(testdb.Blackhole(t))},
		"sslmode=require without TLS is denied":   {dsn: strings.Replace(plain, "sslmode=disable", "sslmode=require", 1), wantReason: "DatabaseTLS"},
		"an un-encoded password is denied":        {dsn: "postgresql://postgres:" + knownPassword + "@" + pg.Addr() + "/app", wantReason: "DatabasePasswordNotEncoded"},
		"a public address is denied":              {dsn: withHost("127.0.0.2:5432"), wantReason: "DatabaseHostPublic"},
		"a DigitalOcean public hostname is denied": {
			dsn: "postgresql://" + encoded + "@db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require", wantReason: "DatabaseHostPublic",
		},
		"garbage is denied": {dsn: "postgresql://postgres:" + knownPassword + "@[::1:bad/x%zz", wantReason: "Database"},
	}

	logs := &syncBuffer{}
	logger := zap.New(zap.WriteTo(logs), zap.UseDevMode(true), zap.Level(zapcore.Level(-2)))
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	var eventsSeen []string

	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			recorder := events.NewFakeRecorder(8)
			prober := probe.NewProber(probe.ProberOptions{
				PrivateCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
				Ports:        probetest.AnyPort(), // throwaway servers listen on ports the OS chose
				Timeout:      2 * time.Second,     // a cold first login on a loaded machine needs more than 500ms
				Observe:      metrics.ObserveProbe,
				Resolver:     tc.resolver,
			})
			reader := fake.NewClientBuilder().WithScheme(Scheme()).WithObjects(readyGreenWithSecretDSN(tc.dsn)...).Build()
			mux := http.NewServeMux()
			for path, h := range Handlers(Scheme(), Options{
				Guard: &checks.Guard{Reader: reader, Prober: prober, DatabaseEnv: []string{"DATABASE_URL"}}, Recorder: recorder,
				Metrics: metrics, RequestTimeout: 5 * time.Second, Logger: &logger,
			}) {
				mux.Handle(path, h)
			}
			srv := httptest.NewServer(mux)
			defer srv.Close()

			body, err := os.ReadFile(filepath.Join("testdata", "cutover-to-green.json"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+PathHTTPRoute+"?timeout=10s", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = resp.Body.Close() }()
			var review admissionv1.AdmissionReview
			if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
				t.Fatal(err)
			}
			r := review.Response
			if r.Allowed != tc.wantAllowed {
				t.Fatalf("allowed = %v, want %v: %v", r.Allowed, tc.wantAllowed, r.Result)
			}
			out, _ := json.Marshal(r)
			if !tc.wantAllowed {
				if !strings.Contains(r.AuditAnnotations["findings"], "database/"+tc.wantReason) {
					t.Errorf("findings %q, want a database/%s finding", r.AuditAnnotations["findings"], tc.wantReason)
				}
				if !strings.Contains(r.Result.Message, "service production/app-green: ") {
					t.Errorf("denial %q does not name the service", r.Result.Message)
				}
			}
			for len(recorder.Events) > 0 {
				eventsSeen = append(eventsSeen, <-recorder.Events)
			}
			assertNoSecret(t, "the admission response", string(out), tc.dsn)
		})
	}

	if len(eventsSeen) < len(cases)-1 {
		t.Errorf("%d Events for %d denials", len(eventsSeen), len(cases)-1)
	}
	assertNoSecret(t, "the Events", strings.Join(eventsSeen, "\n"), plain)
	assertNoSecret(t, "the log", logs.String(), plain)
	if !strings.Contains(logs.String(), "cutover denied") {
		t.Error("the log has no denial line: the assertion above would prove nothing")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&text, mf); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(text.String(), "cutover_guard_database_probes_total") {
		t.Error("no database probe metrics: the assertion below would prove nothing")
	}
	assertNoSecret(t, "the metrics", text.String(), plain)
}

// closingListener accepts connections on loopback, reads what the client
// sends first and closes, as a database going down does (closing without
// reading would make the kernel answer with a reset). It returns its
// host:port.
func closingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(make([]byte, 512))
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

// assertNoSecret fails if out holds the password in any spelling or the DSN.
func assertNoSecret(t *testing.T, what, out, dsn string) {
	t.Helper()
	for _, secret := range []string{knownPassword, url.QueryEscape(knownPassword), url.PathEscape(knownPassword), "Kn0wn-p", dsn} {
		if strings.Contains(out, secret) {
			t.Errorf("%s contains a secret (%q)", what, secret)
		}
	}
}
