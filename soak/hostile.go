package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// The hostile tenant: a namespace of its own whose clients attack the guard
// while the tutorial's tenant switches, to show that one namespace's
// attacks leave the others' decisions correct and inside the deadline.
const (
	hostileNamespace = "soak-hostile"
	// floodRoute switches to floodApp, whose pods name 16 connection
	// strings (the annotation's most) to a listener that never answers.
	floodRoute, floodApp = "flood", "app-flood"
	// bombRoute switches to bombApp, whose DATABASE_URL is the
	// env-expansion bomb (30 chained $(V)$(V) variables).
	bombRoute, bombApp = "bomb", "app-bomb"
	// busyClients is how many patches of floodRoute the busy flood sends
	// at once: more than --max-checks-per-namespace.
	busyClients = 12
	// maxChecksPerNamespace is the soak's --max-checks-per-namespace:
	// above the tutorial tenant's switchers, below the busy flood.
	maxChecksPerNamespace = 8
	// admissionDeadline is the API server's default webhook timeout.
	admissionDeadline = 10 * time.Second
)

// The kinds of request the hostile tenant sends.
const (
	kindHostileFlood = "hostile: probe flood"
	kindHostileBomb  = "hostile: env bomb"
	kindHostileBusy  = "hostile: busy flood"
)

// hostileKinds are the kinds only the hostile tenant sends.
var hostileKinds = []string{kindHostileFlood, kindHostileBomb, kindHostileBusy}

func isHostile(kind string) bool { return strings.HasPrefix(kind, "hostile: ") }

// silent accepts connections on 127.0.0.1 and never answers, counting how
// many are open at once.
type silent struct {
	ln net.Listener

	mu                   sync.Mutex
	open, peak, accepted int
	conns                map[net.Conn]bool
	wg                   sync.WaitGroup
}

func startSilent() (*silent, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &silent{ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.open++
			s.accepted++
			s.peak = max(s.peak, s.open)
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Go(func() {
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close()
				s.mu.Lock()
				s.open--
				delete(s.conns, c)
				s.mu.Unlock()
			})
		}
	})
	return s, nil
}

func (s *silent) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *silent) stats() (peak, accepted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.accepted
}

func (s *silent) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// setUpHostile creates the hostile namespace: blue serving, floodApp and
// bombApp rolled out with their attacks in their env, their Services, and
// floodRoute and bombRoute on blue.
func (e *env) setUpHostile(ctx context.Context) error {
	if err := tutorial.EnsureNamespace(ctx, e.kube, hostileNamespace); err != nil {
		return err
	}
	if err := tutorial.SetSecret(ctx, e.kube, hostileNamespace, "postgresql://postgres@"+e.s.postgres+"/test?sslmode=disable"); err != nil {
		return err
	}
	blue := e.manifests.Deployment(tutorial.Blue, 1, false)
	blue.Namespace = hostileNamespace
	svc := e.manifests.BlueService.DeepCopy()
	svc.Namespace = hostileNamespace
	if err := tutorial.CreateOrReplace(ctx, e.kube, svc); err != nil {
		return err
	}
	if err := tutorial.Serve(ctx, e.kube, blue); err != nil {
		return err
	}
	flood := e.hostileApp(floodApp, func(c *corev1.Container, d *appsv1.Deployment) {
		var names []string
		for i := range 16 {
			n := fmt.Sprintf("DB_%02d", i)
			names = append(names, n)
			c.Env = append(c.Env, corev1.EnvVar{Name: n, Value: fmt.Sprintf("postgresql://app:pw@127.0.0.1:%d/db%02d?sslmode=disable", e.silent.port(), i)})
		}
		d.Annotations = map[string]string{"cutover-guard.dev/database-url-env": strings.Join(names, ",")}
	})
	bomb := e.hostileApp(bombApp, func(c *corev1.Container, _ *appsv1.Deployment) {
		c.Env = []corev1.EnvVar{{Name: "V0", Value: "x"}}
		for k := 1; k <= 30; k++ {
			c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("V%d", k), Value: fmt.Sprintf("$(V%d)$(V%d)", k-1, k-1)})
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: "DATABASE_URL", Value: "postgresql://app@db:5432/app?x=$(V30)"})
	})
	for _, d := range []*appsv1.Deployment{flood, bomb} {
		s := e.manifests.GreenService.DeepCopy()
		s.Namespace, s.Name = hostileNamespace, d.Name
		s.ResourceVersion = ""
		s.Spec.Selector = d.Spec.Template.Labels
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
		if err := tutorial.CreateOrReplace(ctx, e.kube, s); err != nil {
			return err
		}
		if err := tutorial.Serve(ctx, e.kube, d); err != nil {
			return err
		}
	}
	for _, name := range []string{floodRoute, bombRoute} {
		r := e.manifests.Route.DeepCopy()
		r.ObjectMeta = metav1.ObjectMeta{Namespace: hostileNamespace, Name: name}
		if err := tutorial.Recreate(ctx, e.kube, r); err != nil {
			return err
		}
	}
	return nil
}

// hostileApp is green renamed name in the hostile namespace, one replica,
// its pods labelled app=name, its container changed by attack.
func (e *env) hostileApp(name string, attack func(*corev1.Container, *appsv1.Deployment)) *appsv1.Deployment {
	d := e.manifests.Deployment(tutorial.Green, 1, false)
	d.Namespace, d.Name = hostileNamespace, name
	labels := map[string]string{"app": name}
	d.Spec.Selector = &metav1.LabelSelector{MatchLabels: labels}
	d.Spec.Template.Labels = labels
	attack(&d.Spec.Template.Spec.Containers[0], d)
	return d
}

// attackRoute switches route in the hostile namespace to backend; the
// guard must deny it, and the route stays on blue for the next attack.
func (e *env) attackRoute(ctx context.Context, kind, route, backend string) sample {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	r := &gwv1.HTTPRoute{}
	r.Namespace, r.Name = hostileNamespace, route
	patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":%q}]`, backend)
	return e.send(rctx, kind, r, client.RawPatch(types.JSONPatchType, []byte(patch)))
}

// runHostile runs the hostile tenant's clients until stop is closed: one
// probe flood, one env bomb, and busyClients patches at once in bursts.
func (e *env) runHostile(ctx context.Context, stop <-chan struct{}) []sample {
	var (
		mu  sync.Mutex
		all []sample
		wg  sync.WaitGroup
	)
	keep := func(s sample) {
		mu.Lock()
		all = append(all, s)
		mu.Unlock()
		e.sent.Add(1)
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return ctx.Err() != nil
		}
	}
	loop := func(every time.Duration, work func()) {
		wg.Go(func() {
			for !stopped() {
				work()
				pause(ctx, every)
			}
		})
	}
	loop(200*time.Millisecond, func() { keep(e.attackRoute(ctx, kindHostileFlood, floodRoute, floodApp)) })
	loop(200*time.Millisecond, func() { keep(e.attackRoute(ctx, kindHostileBomb, bombRoute, bombApp)) })
	loop(time.Second, func() {
		var burst sync.WaitGroup
		for range busyClients {
			burst.Go(func() { keep(e.attackRoute(ctx, kindHostileBusy, floodRoute, floodApp)) })
		}
		burst.Wait()
	})
	wg.Wait()
	return all
}
