package checks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// chain is the env of a container whose variable Vk is $(Vk-1) repeated
// fan times, V0 being v0, and whose DATABASE_URL ends with $(Vn).
func chain(n, fan int, v0, suffix string) []corev1.EnvVar {
	env := []corev1.EnvVar{literal("V0", v0)}
	for k := 1; k <= n; k++ {
		env = append(env, literal(fmt.Sprintf("V%d", k), strings.Repeat(fmt.Sprintf("$(V%d)", k-1), fan)))
	}
	return append(env, literal("DATABASE_URL", fmt.Sprintf("$(V%d)%s", n, suffix)))
}

// A Deployment whose env doubles a value thirty times is answered at once,
// each variable expanded once: with an empty V0 the connection string is
// found, with a non-empty one the variable that grows past the limit is
// named. The bounds are hang detectors, far above what the check takes.
func TestEnvExpansionBomb(t *testing.T) {
	const dsn = "postgres://app:pw@db/app"
	sixteenK := strings.Repeat("x", 16<<10)
	many := []corev1.EnvVar{literal("V0", sixteenK)}
	var refs strings.Builder
	for k := 1; k <= 100; k++ {
		many = append(many, literal(fmt.Sprintf("V%d", k), "$(V0)"))
		fmt.Fprintf(&refs, "$(V%d)", k)
	}
	// Each of V1..V100 fits the per-variable limit; together they do not.
	many = append(many, literal("DATABASE_URL", refs.String()))
	tests := map[string]struct {
		env      []corev1.EnvVar
		want     []found
		findings []Finding
	}{
		"thirty doublings of nothing": {
			env:  chain(30, 2, "", dsn),
			want: []found{{dsn, "env DATABASE_URL of container app in deployment production/app-green (with $(V30) from env V30 of container app in deployment production/app-green)", "deployment app-green"}},
		},
		"thirty doublings of one byte name the variable past the limit": {
			env: chain(30, 2, "x", dsn),
			findings: []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseEnvTooLong,
				Message: "env V16 of container app in deployment app-green expands to more than 32768 bytes (used by DATABASE_URL)",
				Fix:     "shorten env V16 or the $(VAR) references it expands in deployment app-green: a connection string needs far less than 32 KiB"}},
		},
		"many variables under the limit that add up past the total": {
			env: many,
			findings: []Finding{{Check: CheckDatabase, Severity: Deny, Service: production, Object: "deployment app-green", Reason: ReasonDatabaseEnvTooLong,
				Message: "env V64 of container app in deployment app-green expands past 1048576 bytes with the variables expanded before it (used by DATABASE_URL)",
				Fix:     "shorten env V64 or the $(VAR) references it expands in deployment app-green: a connection string needs far less than 32 KiB"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			deps := []appsv1.Deployment{deployment("app-green", nil, container("app", tc.env))}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			uses, findings, err := discoverDSNs(t.Context(), fake.NewClientBuilder().Build(), production, asWorkloads(deps), nil)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			var got []found
			for _, u := range uses {
				got = append(got, found{u.value, u.src.String(), u.src.object()})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("connection strings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.findings, findings); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			if took > 2*time.Second {
				t.Errorf("answered in %v: the expansion is not bounded", took)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("allocated %d MiB: the expansion is not bounded", alloc>>20)
			}
		})
	}
}

// Expansion stops between variables once ctx has ended: the check ends
// with ctx's error and nothing runs on after the deadline.
func TestEnvExpansionStopsAtTheDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	deps := []appsv1.Deployment{deployment("app-green", nil, container("app", chain(30, 2, "x", "")))}
	uses, findings, err := discoverDSNs(ctx, fake.NewClientBuilder().Build(), production, asWorkloads(deps), nil)
	if !errors.Is(err, context.Canceled) || uses != nil || findings != nil {
		t.Errorf("got %v, %v, %v; want only the context's error", uses, findings, err)
	}
}

// kubeletExpand restates the kubelet's expansion
// (third_party/forked/golang/expansion.Expand) as plainly as it reads:
// "$$" is "$"; "$(NAME)" is NAME's value if defined, else stays; "$(" with
// no ")" after it stays and scanning goes on after "$("; any other "$"
// stays with the byte after it.
func kubeletExpand(s string, defined map[string]string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			out.WriteByte(s[i])
			continue
		}
		next := s[i+1]
		switch next {
		case '$':
			out.WriteByte('$')
			i++
		case '(':
			closeAt := strings.IndexByte(s[i+2:], ')')
			if closeAt < 0 {
				out.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+closeAt]
			if v, ok := defined[name]; ok {
				out.WriteString(v)
			} else {
				out.WriteString("$(" + name + ")")
			}
			i += 2 + closeAt
		default:
			out.WriteByte('$')
			out.WriteByte(next)
			i++
		}
	}
	return out.String()
}

// kubeletEnv restates how the kubelet builds a container's environment:
// the envFrom data first, then each env entry in order, a non-empty value
// expanded against what is defined so far.
func kubeletEnv(fromEnvFrom map[string]string, env []corev1.EnvVar) map[string]string {
	defined := map[string]string{}
	for k, v := range fromEnvFrom {
		defined[k] = v
	}
	for _, ev := range env {
		v := ev.Value
		if v != "" {
			v = kubeletExpand(v, defined)
		}
		defined[ev.Name] = v
	}
	return defined
}

// FuzzExpandEnv compares the guard's environment of a container with the
// kubelet's rules restated: each line of spec is one env entry NAME=VALUE;
// useEnvFrom adds a ConfigMap before them, whose values are not expanded.
func FuzzExpandEnv(f *testing.F) {
	f.Add("A=x\nB=$(A)$(A)\nC=$$(B)$(B)$(D)\nD=$(C", false)
	f.Add("A=$(A)\nA=$(A)$(A)\nB=$(A", true)
	f.Add("B=$(A)\nA=y\nB=$(B)$(A)$()", true)
	f.Add("X=$($(A))\nY=$(a$$b\nZ=$x$", false)
	cm := configMap("env", map[string]string{"A": "from-cm", "B": "$(A)"})
	reader := fake.NewClientBuilder().WithObjects(cm).Build() // read only: shared by every input
	f.Fuzz(func(t *testing.T, spec string, useEnvFrom bool) {
		if len(spec) > 256 {
			return
		}
		var env []corev1.EnvVar
		names := map[string]bool{}
		for line := range strings.SplitSeq(spec, "\n") {
			name, value, ok := strings.Cut(line, "=")
			if !ok || name == "" {
				continue
			}
			env = append(env, literal(name, value))
			names[name] = true
		}
		if len(env) > 8 {
			return
		}
		c := container("app", env)
		fromEnvFrom := map[string]string{}
		if useEnvFrom {
			c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "env"}}}}
			fromEnvFrom = cm.Data
			names["A"], names["B"] = true, true
		}
		want := kubeletEnv(fromEnvFrom, env)
		total := 0
		for _, v := range want {
			total += len(v)
		}
		if total > maxExpandedEnvLen {
			return // past the guard's limit: the bomb test's business
		}
		dep := deployment("app-green", nil, c)
		w := deploymentWorkload(&dep)
		// The keys kept are wantedKeys' for the names looked up: the
		// kubelet's answers prove it leaves out none a lookup asks for.
		looked := slices.Collect(maps.Keys(names))
		res := &envResolver{ctx: t.Context(), r: reader, svc: production,
			objects: map[objectKey]fetched{}, reported: map[string]bool{}, containers: map[*corev1.Container]*containerEnv{},
			wanted: wantedKeys([]Workload{w}, looked)}
		for name := range names {
			got := res.value(&w, &dep.Spec.Template.Spec.Containers[0], name)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if w, ok := want[name]; got.v != w || got.ok != ok || got.tooLong != "" {
				t.Errorf("%s = %q (set %v, too long %q); the kubelet's rules give %q (set %v)", name, got.v, got.ok, got.tooLong, w, ok)
			}
		}
	})
}
