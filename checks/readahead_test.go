package checks

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
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
