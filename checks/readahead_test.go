package checks

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/cutover-guard/cutover-guard/checks/probe"
	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// Reading ahead changes no verdict and reads no object twice: one target
// (slots to spare, so its reads start ahead) and the same target among
// enough others to leave no slot (nothing read ahead) get the same
// findings, and each object is read by one GET either way.
func TestReadAheadChangesNoVerdictAndReadsOnce(t *testing.T) {
	for name, objs := range map[string][]client.Object{
		"ready":          {greenService(), readyDeployment("app-green", 2), slice("app-green", ptr.To(true))},
		"unready slice":  {greenService(), readyDeployment("app-green", 2), slice("app-green", ptr.To(false))},
		"no deployment":  {greenService(), slice("app-green", ptr.To(true))},
		"no service":     {readyDeployment("app-green", 2), slice("app-green", ptr.To(true))},
		"scaled to zero": {greenService(), scaledToZero(readyDeployment("app-green", 2)), slice("app-green", ptr.To(true))},
	} {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			gets := map[string]int{}
			r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
				Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					mu.Lock()
					gets[fmt.Sprintf("%T %s", obj, key)]++
					mu.Unlock()
					return cl.Get(ctx, key, obj, opts...)
				},
			}).Build()
			ahead, err := (&Guard{Reader: r}).Evaluate(t.Context(), []Target{greenTarget()})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			for k, n := range gets {
				if n > 1 {
					t.Errorf("%s read %d times, want once", k, n)
				}
			}
			mu.Unlock()
			// With as many targets as slots, nothing is read ahead.
			ts := []Target{greenTarget()}
			for i := 1; i < DefaultMaxConcurrentTargets; i++ {
				o := greenTarget()
				o.Service.Name = fmt.Sprintf("other-%d", i)
				ts = append(ts, o)
			}
			plain, err := (&Guard{Reader: fakeReader(objs...)}).Evaluate(t.Context(), ts)
			if err != nil {
				t.Fatal(err)
			}
			var own []Finding
			for _, f := range plain.Findings {
				if f.Service.Name == "app-green" {
					own = append(own, f)
				}
			}
			if diff := cmp.Diff(reasons(own), reasons(ahead.Findings)); diff != "" {
				t.Errorf("reasons (-without reading ahead +with):\n%s", diff)
			}
		})
	}
}

// A pod template that names many Secrets and ConfigMaps for its connection
// strings has at most maxReadAheadSources of them read ahead, the first in
// order of appearance; entries for other variables are not guessed at.
func TestConnectionStringSourcesAreBounded(t *testing.T) {
	d := readyDeployment("app-green", 2)
	var env []corev1.EnvVar
	for i := range 100 {
		env = append(env,
			corev1.EnvVar{Name: "DATABASE_URL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: fmt.Sprintf("cm-%03d", i)}, Key: "url"}}},
			corev1.EnvVar{Name: "API_KEY", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: fmt.Sprintf("api-%03d", i)}, Key: "key"}}})
	}
	d.Spec.Template.Spec.Containers[0].Env = env
	got := connectionStringSources(deploymentWorkload(d), []string{"DATABASE_URL"}, maxReadAheadSources)
	want := []objectKey{{"configmap", "cm-000"}, {"configmap", "cm-001"}, {"configmap", "cm-002"}, {"configmap", "cm-003"}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(objectKey{})); diff != "" {
		t.Errorf("sources read ahead (-want +got):\n%s", diff)
	}
}

// A Service's selector, remembered from the last decision that read it,
// starts the ReplicaSet and pod LISTs while the Service itself is still
// being read; a selector that has changed since only wastes those LISTs:
// the check lists with the selector it reads, and the verdict is the one a
// guard that remembers nothing gives.
func TestRememberedSelectorListsAheadOfTheService(t *testing.T) {
	objs := []client.Object{greenService(), readyDeployment("app-green", 2), slice("app-green", ptr.To(true))}
	var (
		mu    sync.Mutex
		lists = map[string]int{} // "PodList app=myapp,version=green" -> LISTs
		hold  bool               // the Service GET waits for both selector LISTs
		held  = make(chan struct{}, 2)
	)
	r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			mu.Lock()
			wait := hold
			mu.Unlock()
			if _, ok := obj.(*corev1.Service); ok && wait {
				deadline := time.After(10 * time.Second)
				for range 2 {
					select {
					case <-held:
					case <-deadline:
						t.Error("the ReplicaSet and pod LISTs did not start while the Service was read")
						return cl.Get(ctx, key, obj, opts...)
					}
				}
			}
			return cl.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			var o client.ListOptions
			o.ApplyOptions(opts)
			kind := list.GetObjectKind().GroupVersionKind().Kind
			if (kind == "PodList" || kind == "ReplicaSetList") && o.LabelSelector != nil {
				mu.Lock()
				lists[kind+" "+o.LabelSelector.String()]++
				if hold {
					held <- struct{}{}
				}
				mu.Unlock()
			}
			return cl.List(ctx, list, opts...)
		},
	}).Build()
	g := &Guard{Reader: r}
	evaluate := func(g *Guard) []Reason {
		t.Helper()
		res, err := g.Evaluate(t.Context(), []Target{greenTarget()})
		if err != nil {
			t.Fatal(err)
		}
		return reasons(res.Findings)
	}
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		c := maps.Clone(lists)
		clear(lists)
		return c
	}

	first := evaluate(g) // remembers app-green's selector
	if diff := cmp.Diff(map[string]int{"PodList app=myapp,version=green": 1, "ReplicaSetList app=myapp,version=green": 1}, counts()); diff != "" {
		t.Errorf("first decision's LISTs (-want +got):\n%s", diff)
	}
	mu.Lock()
	hold = true
	mu.Unlock()
	if diff := cmp.Diff(first, evaluate(g)); diff != "" {
		t.Errorf("reasons (-first decision +second):\n%s", diff)
	}
	mu.Lock()
	hold = false
	mu.Unlock()
	if diff := cmp.Diff(map[string]int{"PodList app=myapp,version=green": 1, "ReplicaSetList app=myapp,version=green": 1}, counts()); diff != "" {
		t.Errorf("second decision's LISTs, read ahead (-want +got):\n%s", diff)
	}

	// The selector changes: green's Deployment no longer matches it.
	svc := greenService()
	if err := r.Get(t.Context(), client.ObjectKeyFromObject(svc), svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Selector = map[string]string{"app": "myapp", "version": "green-2"}
	if err := r.Update(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	got := evaluate(g)
	c := counts()
	if c["PodList app=myapp,version=green-2"] != 1 || c["ReplicaSetList app=myapp,version=green-2"] != 1 {
		t.Errorf("the check did not list with the selector it read: %v", c)
	}
	fresh := evaluate(&Guard{Reader: r})
	if diff := cmp.Diff(fresh, got); diff != "" {
		t.Errorf("reasons after the selector changed (-a guard that remembers nothing +this one):\n%s", diff)
	}
	if cmp.Equal(first, got) {
		t.Errorf("the verdict did not follow the new selector (still %v)", got)
	}
}

// What a tenant can make the guard remember is bounded: a selector larger
// than maxRememberedSelectorBytes is not kept (and forgets the one kept
// before), and no more than maxRememberedSelectors Services are.
func TestRememberedSelectorsAreBounded(t *testing.T) {
	r := newRememberedSelectors()
	svc := greenService()
	r.remember(svc)
	if _, ok := r.selector(green); !ok {
		t.Fatal("a small selector was not remembered")
	}
	big := map[string]string{}
	for i := range 20 {
		big[fmt.Sprintf("label-%02d", i)] = strings.Repeat("x", 40)
	}
	svc.Spec.Selector = big
	r.remember(svc)
	if s, ok := r.selector(green); ok {
		t.Fatalf("a %d-label selector was remembered: %v", len(s), s)
	}
	for i := range maxRememberedSelectors + 100 {
		s := greenService()
		s.Name = fmt.Sprintf("svc-%05d", i)
		r.remember(s)
	}
	if n := r.cache.Len(); n != maxRememberedSelectors {
		t.Fatalf("%d selectors remembered, want at most %d", n, maxRememberedSelectors)
	}
	if _, ok := r.selector(types.NamespacedName{Namespace: "production", Name: "svc-00000"}); ok {
		t.Error("the least recently used selector was kept past the bound")
	}
}

// The Secret that the named Deployment's connection-string env named last
// time is read beside the Deployment, not after it; when the env names
// another Secret since, the remembered one only costs its read: the check
// reads the Secret the Deployment names now, and the findings are those of
// a guard that remembers nothing.
func TestRememberedSourcesReadBesideTheDeployment(t *testing.T) {
	d := readyDeployment("app-green", 2)
	d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{fromSecret("DATABASE_URL", "db-one", "url", false)}
	objs := []client.Object{greenService(), d, slice("app-green", ptr.To(true)),
		secret("db-one", map[string]string{"url": "postgres://app:one-pw@db-one.internal:5432/app"}),
		secret("db-two", map[string]string{"url": "postgres://app:two-pw@db-two.internal:5432/app"})}
	var (
		mu      sync.Mutex
		gets    = map[string]int{} // "*v1.Secret production/db-one" -> GETs
		hold    bool               // the Deployment GET waits for the Secret GET
		started = make(chan struct{}, 1)
	)
	r := fake.NewClientBuilder().WithScheme(testScheme()).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			mu.Lock()
			gets[fmt.Sprintf("%T %s", obj, key)]++
			wait := hold
			mu.Unlock()
			switch obj.(type) {
			case *corev1.Secret:
				if wait {
					started <- struct{}{}
				}
			case *appsv1.Deployment:
				if wait {
					select {
					case <-started:
					case <-time.After(10 * time.Second):
						t.Error("the remembered Secret was not read while the Deployment was")
					}
				}
			}
			return cl.Get(ctx, key, obj, opts...)
		},
	}).Build()
	prober := func() *probe.Prober {
		return probe.NewProber(probe.ProberOptions{Resolver: probetest.FixedResolver("10.0.0.5"), Dial: probetest.RefuseDial})
	}
	evaluate := func(g *Guard) []Finding {
		t.Helper()
		res, err := g.Evaluate(t.Context(), []Target{greenTarget()})
		if err != nil {
			t.Fatal(err)
		}
		return res.Findings
	}
	counts := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		c := maps.Clone(gets)
		clear(gets)
		return c
	}
	g := &Guard{Reader: r, Prober: prober()}
	first := evaluate(g) // remembers db-one
	if n := counts()["*v1.Secret production/db-one"]; n != 1 {
		t.Fatalf("first decision read db-one %d times, want 1", n)
	}
	mu.Lock()
	hold = true
	mu.Unlock()
	second := evaluate(g)
	mu.Lock()
	hold = false
	mu.Unlock()
	if diff := cmp.Diff(first, second); diff != "" {
		t.Errorf("findings (-first decision +second, read ahead):\n%s", diff)
	}
	for k, n := range counts() {
		if n != 1 {
			t.Errorf("second decision: %s read %d times, want once", k, n)
		}
	}

	// The Deployment now takes its connection string from db-two.
	if err := r.Get(t.Context(), client.ObjectKeyFromObject(d), d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{fromSecret("DATABASE_URL", "db-two", "url", false)}
	if err := r.(client.Client).Update(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	got := evaluate(g)
	c := counts()
	if c["*v1.Secret production/db-two"] != 1 || c["*v1.Secret production/db-one"] > 1 {
		t.Errorf("after the env changed, Secrets read: %v; want db-two once, db-one at most once (the guess)", c)
	}
	if diff := cmp.Diff(evaluate(&Guard{Reader: r, Prober: prober()}), got); diff != "" {
		t.Errorf("findings after the env changed (-a guard that remembers nothing +this one):\n%s", diff)
	}
	if cmp.Equal(first, got) {
		t.Errorf("the findings did not follow the new Secret (still %v)", reasons(got))
	}

	// The Deployment is deleted: what it named is forgotten, so the
	// decisions after the next read no Secret ahead.
	if err := r.(client.Client).Delete(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	evaluate(g)
	if srcs, ok := g.sources.get(green); ok {
		t.Errorf("sources %v still remembered for a deleted Deployment", srcs)
	}
	counts()
	evaluate(g)
	for k, n := range counts() {
		if strings.HasPrefix(k, "*v1.Secret ") {
			t.Errorf("%s read %d times after the Deployment was deleted, want none", k, n)
		}
	}
}

// What a tenant can make the guard remember of its Secrets is bounded: at
// most maxReadAheadSources per Service, and nothing for a Deployment whose
// env names none.
func TestRememberedSourcesAreBounded(t *testing.T) {
	r := newRememberedSources()
	var many []objectKey
	for i := range 100 {
		many = append(many, objectKey{"secret", fmt.Sprintf("s-%03d", i)})
	}
	r.remember(green, many)
	if got, _ := r.get(green); len(got) != maxReadAheadSources {
		t.Errorf("%d sources remembered, want %d", len(got), maxReadAheadSources)
	}
	r.remember(green, nil)
	if got, ok := r.get(green); ok {
		t.Errorf("a Deployment with no sources left %v remembered", got)
	}
	for i := range maxRememberedSelectors + 100 {
		r.remember(types.NamespacedName{Namespace: "production", Name: fmt.Sprintf("svc-%05d", i)}, many[:1])
	}
	if n := r.cache.Len(); n != maxRememberedSelectors {
		t.Errorf("sources remembered for %d Services, want at most %d", n, maxRememberedSelectors)
	}
}
