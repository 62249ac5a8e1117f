// Package clientauth_test runs the guard with --client-ca-file on its own
// local control plane, whose API server presents a client certificate to
// the webhooks it calls (cluster.Options.WebhookClientCert): the API server
// still gets its answers, and a caller without that certificate never gets
// a decision or an Event out of the guard. It never touches the shared
// suite's cluster or guard in ./e2e.
package clientauth_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// dsn is the tutorial Secret's connection string; the guard runs with
// --skip-database-check, so nothing dials it.
const dsn = "postgresql://app@127.0.0.1:5432/app?sslmode=require"

var shared tutorial.Shared[*tutorial.Stack]

func TestMain(m *testing.M) {
	os.Exit(shared.Main(m, func(s *tutorial.Stack) *tutorial.Stack { return s }))
}

// setup returns the package's stack, starting it on first use; it skips
// (or, with CUTOVER_GUARD_TEST_REQUIRED=1, fails) without the tools.
func setup(t *testing.T) *tutorial.Stack {
	t.Helper()
	s := shared.Get(t, func() (*tutorial.Stack, string, error) {
		toolsDir, skip := tutorial.Preflight()
		if skip != "" {
			return nil, skip, nil
		}
		s, err := tutorial.StartStack(context.Background(), tutorial.StackOptions{
			Name: "e2e/clientauth", ToolsDir: toolsDir, DSN: dsn,
			AuthenticateAPIServer: true,
			GuardArgs:             []string{"--skip-database-check"},
		})
		return s, "", err
	})
	s.Guard.LogOnFailure(t, 60)
	return s
}

// The API server, presenting its client certificate, gets the guard's
// denial of the tutorial's switch to an unready green. A forged review
// posted straight to the guard (an invented user overriding the guard on a
// made-up route) fails the TLS handshake without a client certificate and
// with one from another CA: no decision is counted and no Event written.
// The same review with the API server's certificate is decided, which
// shows it is the certificate that keeps the others out.
func TestOnlyTheAPIServerIsAnswered(t *testing.T) {
	s := setup(t)
	ctx := t.Context()
	kubectl := &tutorial.Kubectl{Binary: s.Cluster.Kubectl, Kubeconfig: s.Cluster.Kubeconfig, Home: filepath.Join(s.Dir, "kubectl")}

	r := kubectl.Shell(ctx, tutorial.CutoverCommand)
	if !r.Denied() || !strings.Contains(r.Output, `admission webhook "`+tutorial.HTTPRouteWebhook+`" denied the request`) ||
		!strings.Contains(r.Output, "deployment app-green is not ready") {
		t.Fatalf("the tutorial's switch to an unready green: want the guard's denial through the API server, got:\n%s", r)
	}
	waitEvent(t, s.Kube, tutorial.Route, "app-green")

	before := decisions(t, s.Guard)
	url := fmt.Sprintf("https://127.0.0.1:%d/validate-httproute", s.Guard.Port)
	other, err := testcert.NewAuthority()
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string][]tls.Certificate{
		"no client certificate": nil,
		"a certificate from another CA with the accepted Common Name": clientCert(t, other, cluster.WebhookClientCN),
		"a certificate from another CA for system:masters":            clientCert(t, other, "system:masters"),
	} {
		t.Run(name, func(t *testing.T) {
			for version, max := range map[string]uint16{"TLS 1.2": tls.VersionTLS12, "TLS 1.3": tls.VersionTLS13} {
				if err := handshake(ctx, s.Guard.Port, s.Guard.CABundle, cert, max); err == nil || !strings.Contains(err.Error(), "remote error: tls: ") {
					t.Errorf("%s: handshake = %v, want the guard's TLS alert", version, err)
				}
			}
			if status, body, err := post(ctx, url, s.Guard.CABundle, cert, forgedReview(t, false)); err == nil {
				t.Fatalf("forged review answered: HTTP %d\n%s", status, body)
			}
		})
	}

	// The control: the API server's own certificate, dry run (no Event).
	apiserver, err := tls.LoadX509KeyPair(s.Cluster.WebhookClientCertFile, s.Cluster.WebhookClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	status, body, err := post(ctx, url, s.Guard.CABundle, []tls.Certificate{apiserver}, forgedReview(t, true))
	if err != nil || status != http.StatusOK {
		t.Fatalf("the same review with the API server's certificate: HTTP %d, %v\n%s", status, err, body)
	}
	var answer admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &answer); err != nil || answer.Response == nil || answer.Response.Allowed {
		t.Fatalf("the same review with the API server's certificate: want a denial, got %v\n%s", err, body)
	}
	if got := decisions(t, s.Guard) - before; got != 1 {
		t.Errorf("decisions since the forged reviews = %v, want 1 (the API server's dry run only)", got)
	}

	// A real denial after the forged reviews writes its Event; by then an
	// Event of theirs would be there too.
	missing := strings.Replace(tutorial.CutoverCommand, `"value":"app-green"`, `"value":"app-purple"`, 1)
	if r := kubectl.Shell(ctx, missing); !r.Denied() {
		t.Fatalf("switch to a missing Service: want a denial, got:\n%s", r)
	}
	waitEvent(t, s.Kube, tutorial.Route, "app-purple")
	var events corev1.EventList
	if err := s.Kube.List(ctx, &events, client.InNamespace(tutorial.Namespace)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events.Items {
		if ev.InvolvedObject.Name == forgedRoute || strings.Contains(ev.Message, forgedUser) {
			t.Errorf("a forged review wrote Event %s: %s %s", ev.Name, ev.Reason, ev.Message)
		}
	}
}

const (
	forgedRoute = "forged"
	forgedUser  = "invented-admin"
)

// forgedReview is an update of route "forged" from blue to the unready
// green by a user nobody authenticated, with a break-glass override.
func forgedReview(t *testing.T, dryRun bool) []byte {
	t.Helper()
	m := tutorial.MustLoad()
	oldRoute := m.Route.DeepCopy()
	oldRoute.Name, oldRoute.Namespace, oldRoute.UID = forgedRoute, tutorial.Namespace, types.UID("0f0f0f0f-0000-4000-8000-000000000001")
	oldRoute.TypeMeta = metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "HTTPRoute"}
	newRoute := oldRoute.DeepCopy()
	newRoute.Spec.Rules[0].BackendRefs[0].Name = tutorial.Green
	newRoute.Annotations = map[string]string{"cutover-guard.dev/override": "forged break-glass"}
	raw := func(o runtime.Object) runtime.RawExtension {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("0f0f0f0f-0000-4000-8000-000000000002"),
			Kind:      metav1.GroupVersionKind{Group: gwv1.GroupName, Version: "v1", Kind: "HTTPRoute"},
			Resource:  metav1.GroupVersionResource{Group: gwv1.GroupName, Version: "v1", Resource: "httproutes"},
			Name:      forgedRoute,
			Namespace: tutorial.Namespace,
			Operation: admissionv1.Update,
			UserInfo:  authenticationv1.UserInfo{Username: forgedUser, Groups: []string{"system:masters", "system:authenticated"}},
			Object:    raw(newRoute),
			OldObject: raw(oldRoute),
			DryRun:    ptr.To(dryRun),
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func clientCert(t *testing.T, a *testcert.Authority, cn string) []tls.Certificate {
	t.Helper()
	b, err := a.Client(cn)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(b.CertPEM, b.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{c}
}

// handshake completes a TLS handshake with the guard's webhook port, at
// most at version maxVersion, presenting certs, and reads from the
// connection: the guard refuses a client certificate during the handshake
// in TLS 1.2, and right after the client's part of it in TLS 1.3, so either
// way its alert is the error.
func handshake(ctx context.Context, port int, caPEM []byte, certs []tls.Certificate, maxVersion uint16) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("the guard's CA bundle holds no certificate")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12, MaxVersion: maxVersion}}
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// post sends body to url as the API server would, trusting caPEM for the
// guard's serving certificate and presenting certs.
func post(ctx context.Context, url string, caPEM []byte, certs []tls.Certificate, body []byte) (int, []byte, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return 0, nil, fmt.Errorf("the guard's CA bundle holds no certificate")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"?timeout=10s", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// decisions is the guard's cutover_guard_decisions_total, all labels.
func decisions(t *testing.T, g *tutorial.Guard) float64 {
	t.Helper()
	page, err := g.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return tutorial.MetricSum(page, "cutover_guard_decisions_total", nil)
}

// waitEvent waits for a CutoverDenied Event on route whose message names
// service.
func waitEvent(t *testing.T, c client.Client, route, service string) {
	t.Helper()
	var seen []string
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var events corev1.EventList
		if err := c.List(ctx, &events, client.InNamespace(tutorial.Namespace)); err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, ev := range events.Items {
			seen = append(seen, ev.Reason+": "+ev.Message)
			if ev.Reason == "CutoverDenied" && ev.InvolvedObject.Kind == "HTTPRoute" && ev.InvolvedObject.Name == route &&
				strings.Contains(ev.Message, service) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no CutoverDenied Event on HTTPRoute %s naming %s: %v; events: %q", route, service, err, seen)
	}
}
