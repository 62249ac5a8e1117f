package faults_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// TestSIGTERMDrainsInFlightDecision sends SIGTERM while the guard is
// deciding a switch whose database never answers (the decision takes
// --db-timeout): the client still gets the guard's verdict, new
// connections are refused meanwhile, and the guard then exits 0.
func TestSIGTERMDrainsInFlightDecision(t *testing.T) {
	e := setup(t)
	t.Cleanup(func() { e.ensureGuard(t) })
	db := silentDatabase(t)
	e.reset(t, "postgresql://postgres@"+db.addr()+"/test?sslmode=disable")
	ctx := t.Context()

	// The verdict undisturbed, for comparison; the route stays on blue.
	want := deniedSwitch(t, e, tutorial.Green)
	if !strings.Contains(want, "service "+tutorial.Namespace+"/"+tutorial.Green) {
		t.Fatalf("the guard's verdict does not name %s:\n%s", tutorial.Green, want)
	}

	probes, logged := db.accepted(), strings.Count(e.guard.Log(), `"cutover denied"`)
	verdict := make(chan error, 1)
	go func() {
		_, err := switchWithClientGo(context.WithoutCancel(ctx), e, tutorial.Green)
		verdict <- err
	}()
	waitFor(t, time.Minute, "the guard to probe the database", func() (bool, string) {
		return db.accepted() > probes, fmt.Sprintf("%d connections to the silent database, %d before the switch", db.accepted(), probes)
	})
	pid := e.guard.PID()
	if err := e.guard.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	signalled := time.Now()

	refusedInFlight := waitRefused(t, e.guard.Port, verdict)
	// With one replica, writes that reach the guard while it drains fail
	// as they do while it is down: a path edit changes the spec, so the
	// installed matchConditions send it, and moves no traffic.
	edit := &gwv1.HTTPRoute{}
	edit.Namespace, edit.Name = tutorial.Namespace, tutorial.Route
	editErr := e.kube.Patch(ctx, edit, client.RawPatch(types.JSONPatchType, []byte(`[{"op":"replace","path":"/spec/rules/0/matches/0/path/value","value":"/while-draining"}]`)))
	if editErr == nil || !strings.Contains(editErr.Error(), `failed calling webhook "`+tutorial.HTTPRouteWebhook+`"`) {
		t.Errorf("path edit while the guard drains: want the API server's webhook error, got %v", editErr)
	}
	got := <-verdict
	answered := time.Since(signalled)
	if !refusedInFlight {
		t.Errorf("after SIGTERM, the switch was answered before a new connection to 127.0.0.1:%d was refused: the listener stayed open while draining", e.guard.Port)
	}
	if got == nil {
		t.Fatalf("switch to %s allowed during shutdown; want the guard's denial:\n%s", tutorial.Green, want)
	}
	if !apierrors.IsForbidden(got) {
		t.Fatalf("in-flight switch got no verdict from the guard (want its denial): %v", got)
	}
	if diff := cmp.Diff(want, got.Error()); diff != "" {
		t.Errorf("verdict during shutdown differs from the undisturbed one (-undisturbed +during shutdown):\n%s", diff)
	}

	exitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := e.guard.Wait(exitCtx)
	exited := time.Since(signalled)
	if exitCtx.Err() != nil {
		t.Fatalf("guard (pid %d) still running %s after SIGTERM", pid, exited.Round(time.Millisecond))
	}
	if err != nil {
		t.Errorf("guard (pid %d) exited after SIGTERM with %v, want status 0", pid, err)
	}
	if n := strings.Count(e.guard.Log(), `"cutover denied"`); n != logged+1 {
		t.Errorf("guard logged %d denials during shutdown, want the drained one", n-logged)
	}
	t.Logf("SIGTERM during the decision: verdict after %s, guard exited after %s; a write arriving while it drained: %v",
		answered.Round(time.Millisecond), exited.Round(time.Millisecond), editErr)
}

// deniedSwitch switches the route to backend, requires the guard to deny
// it, and returns the client's error text.
func deniedSwitch(t *testing.T, e *env, backend string) string {
	t.Helper()
	_, err := switchWithClientGo(t.Context(), e, backend)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `admission webhook "`+tutorial.HTTPRouteWebhook+`" denied the request`) {
		t.Fatalf("switch to %s: want the guard's denial, got %v", backend, err)
	}
	return err.Error()
}

// waitRefused polls until a TCP connection to port on 127.0.0.1 is
// refused, and reports whether that happened before verdict was ready.
func waitRefused(t *testing.T, port int, verdict chan error) bool {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			last = errors.New("connection accepted")
			return false, nil
		}
		last = err
		return errors.Is(err, syscall.ECONNREFUSED), nil
	})
	if err != nil {
		t.Fatalf("new connections to %s still not refused after SIGTERM: %v (last: %v)", addr, err, last)
	}
	if len(verdict) > 0 {
		return false
	}
	return true
}

// silentDB is a TCP listener on 127.0.0.1 that accepts connections and
// never answers: a database probe against it lasts until its timeout.
type silentDB struct {
	ln    net.Listener
	count atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func silentDatabase(t *testing.T) *silentDB {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	db := &silentDB{ln: ln}
	db.wg.Add(1)
	go db.serve()
	t.Cleanup(db.close)
	return db
}

func (db *silentDB) serve() {
	defer db.wg.Done()
	for {
		c, err := db.ln.Accept()
		if err != nil {
			return
		}
		db.count.Add(1)
		db.mu.Lock()
		db.conns = append(db.conns, c)
		db.mu.Unlock()
		db.wg.Add(1)
		go func() {
			defer db.wg.Done()
			_, _ = io.Copy(io.Discard, c) // until the client gives up
		}()
	}
}

func (db *silentDB) addr() string { return db.ln.Addr().String() }

func (db *silentDB) accepted() int64 { return db.count.Load() }

func (db *silentDB) close() {
	_ = db.ln.Close()
	db.mu.Lock()
	for _, c := range db.conns {
		_ = c.Close()
	}
	db.mu.Unlock()
	db.wg.Wait()
}
