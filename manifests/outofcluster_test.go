package manifests_test

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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/internal/tail"
	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// documentedGuard is the guard started as README and design.md say, out
// of cluster: the binary, a kubeconfig, a folder with a key pair and a port.
type documentedGuard struct {
	cmd                   *exec.Cmd
	done                  chan struct{}
	port, metrics, health int
	caPEM                 []byte
	log                   string
}

// startDocumented runs the binary with --kubeconfig, --cert-dir and --port
// (and the metrics and health addresses on free loopback ports, only so
// that it takes no fixed port of the machine) and nothing else: no
// certificate flag. It waits for /readyz.
func startDocumented(t *testing.T, kubeconfig, certDir string) (*documentedGuard, error) {
	t.Helper()
	ports := freePorts(t, 3)
	g := &documentedGuard{port: ports[0], metrics: ports[1], health: ports[2], log: filepath.Join(t.TempDir(), "guard.log"), done: make(chan struct{})}
	logFile, err := os.Create(g.log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logFile.Close() }()
	g.cmd = exec.Command(guardBinary(t),
		"--kubeconfig="+kubeconfig, "--cert-dir="+certDir, "--port="+strconv.Itoa(g.port),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(g.metrics), "--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(g.health))
	// Not the test's $KUBECONFIG or a pod's environment: --kubeconfig decides.
	g.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	g.cmd.Stdout, g.cmd.Stderr = logFile, logFile
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.cmd.Wait(); close(g.done) }()
	t.Cleanup(func() {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(20 * time.Second):
			_ = g.cmd.Process.Kill()
			<-g.done
		}
		if t.Failed() {
			t.Logf("guard log:\n%s", tail.File(g.log, 30))
		}
	})
	err = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case <-g.done:
			return false, fmt.Errorf("the guard exited: %s", g.cmd.ProcessState)
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", g.health)) //nolint:noctx // bounded by the poll
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return g, err
}

// logText is what the guard has logged so far.
func (g *documentedGuard) logText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(g.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// review posts an AdmissionReview for the creation of an HTTPRoute in
// namespace default whose only backend is Service missing, and returns
// the guard's answer.
func (g *documentedGuard) review(t *testing.T, missing string) *admissionv1.AdmissionResponse {
	t.Helper()
	port := gwv1.PortNumber(80)
	route := &gwv1.HTTPRoute{
		TypeMeta:   metav1.TypeMeta{APIVersion: gwv1.GroupVersion.String(), Kind: "HTTPRoute"},
		ObjectMeta: metav1.ObjectMeta{Name: "out-of-cluster", Namespace: "default", UID: types.UID("0f0f0f0f-0000-4000-8000-000000000016")},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "gateway"}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(missing), Port: &port}}}}}},
		},
	}
	raw, err := json.Marshal(route)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("0f0f0f0f-0000-4000-8000-000000000017"),
			Kind:      metav1.GroupVersionKind{Group: gwv1.GroupName, Version: "v1", Kind: "HTTPRoute"},
			Resource:  metav1.GroupVersionResource{Group: gwv1.GroupName, Version: "v1", Resource: "httproutes"},
			Name:      route.Name,
			Namespace: route.Namespace,
			Operation: admissionv1.Create,
			UserInfo:  authenticationv1.UserInfo{Username: "someone", Groups: []string{"system:authenticated"}},
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(g.caPEM)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("https://127.0.0.1:%d/validate-httproute?timeout=10s", g.port), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("review: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("review: HTTP %d, %v\n%s", resp.StatusCode, err, b)
	}
	var answer admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &answer); err != nil || answer.Response == nil {
		t.Fatalf("review answer: %v\n%s", err, b)
	}
	return answer.Response
}

// TestOutOfClusterStart: the command README and design.md document, on a
// cluster without the in-cluster install (no namespace, no certificate
// Secret), serves the key pair in --cert-dir and decides a review against
// the cluster; it says in its log that it serves the files and why. With
// an empty --cert-dir it stops at once and says what to put there.
func TestOutOfClusterStart(t *testing.T) {
	c := sharedCluster(t)

	empty := t.TempDir()
	g, err := startDocumented(t, c.Kubeconfig, empty)
	if err == nil {
		t.Fatal("the guard became ready with an empty --cert-dir")
	}
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the guard with an empty --cert-dir did not exit")
	}
	if log := g.logText(t); !strings.Contains(log, "--cert-dir "+empty+" has no tls.crt and no tls.key") ||
		!strings.Contains(log, "--cert-rotation=true") || strings.Contains(log, "Secret cutover-guard/") {
		t.Errorf("an empty --cert-dir: the log does not name the missing files and the way out:\n%s", tail.Lines(log, 10))
	}

	bundle, err := testcert.Issue()
	if err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	if err := bundle.WriteKeyPair(certDir); err != nil {
		t.Fatal(err)
	}
	g, err = startDocumented(t, c.Kubeconfig, certDir)
	if err != nil {
		t.Fatalf("the documented command did not become ready: %v\n%s", err, tail.File(g.log, 30))
	}
	g.caPEM = bundle.CAPEM
	log := g.logText(t)
	if !strings.Contains(log, "certificate rotation off: serving tls.crt and tls.key from --cert-dir") || !strings.Contains(log, "out of cluster (--kubeconfig)") {
		t.Errorf("the start-up log does not say the files are served and why:\n%s", tail.Lines(log, 10))
	}
	r := g.review(t, "no-such-service")
	if r.Allowed || r.Result == nil || !strings.Contains(r.Result.Message, "no-such-service") {
		t.Errorf("a route to a missing Service: allowed=%v %+v, want a denial naming it", r.Allowed, r.Result)
	}
}
