package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
)

// allowServer is the floor a webhook can reach: an HTTPS endpoint, served
// like the guard (TLS, HTTP/1.1 keep-alive, the same certificate), that
// decodes each AdmissionReview and allows it without reading anything. The
// gap between it and no webhook is what the API server's webhook call
// costs; the gap between the guard and it is what the guard's decision
// costs.
type allowServer struct {
	srv   *http.Server
	port  int
	calls atomic.Int64
}

func startAllowServer(certs *testcert.Bundle) (*allowServer, error) {
	pair, err := tls.X509KeyPair(certs.CertPEM, certs.KeyPEM)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &allowServer{port: ln.Addr().(*net.TCPAddr).Port}
	mux := http.NewServeMux()
	mux.HandleFunc("/allow", a.serve)
	a.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
	}
	go func() { _ = a.srv.ServeTLS(ln, "", "") }()
	return a, nil
}

func (a *allowServer) serve(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	body, err := io.ReadAll(io.LimitReader(r.Body, 7<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

func (a *allowServer) url() string { return fmt.Sprintf("https://127.0.0.1:%d/allow", a.port) }

func (a *allowServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.srv.Shutdown(ctx)
}

// backgroundNamespace holds the objects the background writer updates:
// nothing the guard or the routes depend on.
const backgroundNamespace = "background"

// backgroundWrites updates ConfigMaps in backgroundNamespace at rate writes
// per second until the returned stop is called, as a cluster's node
// leases, Events and status updates keep etcd's revision moving. stop
// returns the writes made per second and the first error, if any.
func backgroundWrites(ctx context.Context, cs kubernetes.Interface, rate int) (stop func() (float64, error), err error) {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: backgroundNamespace}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	const objects = 10
	for i := range objects {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("noise-%d", i)}}
		if _, err := cs.CoreV1().ConfigMaps(backgroundNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var writes atomic.Int64
	var firstErr atomic.Value
	began := time.Now()
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			patch := []byte(`{"data":{"seq":"` + strconv.Itoa(i) + `"}}`)
			_, err := cs.CoreV1().ConfigMaps(backgroundNamespace).Patch(wctx, fmt.Sprintf("noise-%d", i%objects),
				types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "cutover-guard-bench-noise"})
			switch {
			case err == nil:
				writes.Add(1)
			case wctx.Err() == nil:
				firstErr.CompareAndSwap(nil, err)
			}
		}
	}()
	return func() (float64, error) {
		cancel()
		<-done
		perSecond := float64(writes.Load()) / time.Since(began).Seconds()
		if err, _ := firstErr.Load().(error); err != nil && !errors.Is(err, context.Canceled) {
			return perSecond, fmt.Errorf("background writes: %w", err)
		}
		return perSecond, nil
	}, nil
}
