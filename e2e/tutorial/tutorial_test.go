package tutorial

import (
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/cutover-guard/cutover-guard/internal/testcert"
	"github.com/cutover-guard/cutover-guard/manifests"
)

// The manifests are the tutorial's: what the guard reads of them is there.
func TestManifestsAreTheTutorials(t *testing.T) {
	m, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*appsv1.Deployment{m.BlueDeployment, m.GreenDeployment} {
		version := d.Name[len("app-"):]
		want := map[string]string{"app": "myapp", "version": version}
		if diff := cmp.Diff(want, d.Spec.Template.Labels); diff != "" {
			t.Errorf("%s pod labels (-want +got):\n%s", d.Name, diff)
		}
		if *d.Spec.Replicas != Replicas || d.Namespace != Namespace {
			t.Errorf("%s: %d replicas in %q, want %d in %q", d.Name, *d.Spec.Replicas, d.Namespace, Replicas, Namespace)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/ready" {
			t.Errorf("%s: readinessProbe %+v, want httpGet /ready", d.Name, c.ReadinessProbe)
		}
		if len(c.Env) != 1 || c.Env[0].Name != "DATABASE_URL" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.SecretKeyRef == nil ||
			c.Env[0].ValueFrom.SecretKeyRef.Name != Secret || c.Env[0].ValueFrom.SecretKeyRef.Key != SecretKey {
			t.Errorf("%s: env %+v, want DATABASE_URL from secret %s key %s", d.Name, c.Env, Secret, SecretKey)
		}
		if d.Spec.Template.Spec.NodeSelector != nil {
			t.Errorf("%s has a nodeSelector; the tutorial's has none", d.Name)
		}
	}
	for version, svc := range map[string]*corev1.Service{"blue": m.BlueService, "green": m.GreenService} {
		p := svc.Spec.Ports[0]
		if len(svc.Spec.Ports) != 1 || p.Port != 80 || p.TargetPort != intstr.FromInt32(8080) ||
			!maps.Equal(svc.Spec.Selector, map[string]string{"app": "myapp", "version": version}) {
			t.Errorf("service %s: ports %+v, selector %v; want 80 -> 8080 and app=myapp,version=%s", svc.Name, svc.Spec.Ports, svc.Spec.Selector, version)
		}
	}
	ref := m.Route.Spec.Rules[0].BackendRefs[0]
	if ref.Name != Blue || ref.Port == nil || *ref.Port != 80 || ref.Weight != nil || ref.Namespace != nil {
		t.Errorf("route backendRef %+v, want app-blue port 80", ref.BackendRef)
	}
	if string(m.Gateway.Spec.GatewayClassName) != "cilium" {
		t.Errorf("gatewayClassName %q, want the tutorial's cilium", m.Gateway.Spec.GatewayClassName)
	}
}

// WriteFiles can hold green Pending by adding a nodeSelector to its file,
// and leaves the rest of it as the tutorial wrote it.
func TestWriteFilesPendingGreen(t *testing.T) {
	decoder := serializer.NewCodecFactory(Scheme()).UniversalDeserializer()
	for name, pending := range map[string]bool{"as the tutorial wrote it": false, "held pending": true} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteFiles(dir, pending); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, GreenFile))
			if err != nil {
				t.Fatal(err)
			}
			obj, _, err := decoder.Decode(raw, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := obj.(*appsv1.Deployment)
			want := MustLoad().Deployment(Green, Replicas, pending)
			if diff := cmp.Diff(want.Spec, got.Spec); diff != "" {
				t.Errorf("app-green.yaml (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMetricSum(t *testing.T) {
	page := `# HELP cutover_guard_decisions_total Admission decisions.
# TYPE cutover_guard_decisions_total counter
cutover_guard_decisions_total{kind="HTTPRoute",path="checked",result="denied"} 3
cutover_guard_decisions_total{kind="GRPCRoute",path="checked",result="denied"} 1
cutover_guard_decisions_total{kind="HTTPRoute",path="fast",result="allowed"} 7
cutover_guard_decisions_total_extra{kind="HTTPRoute",result="denied"} 100
`
	tests := map[string]struct {
		name   string
		labels map[string]string
		want   float64
	}{
		"one series":                      {"cutover_guard_decisions_total", map[string]string{"kind": "HTTPRoute", "result": "denied"}, 3},
		"a sum over series":               {"cutover_guard_decisions_total", map[string]string{"result": "denied"}, 4},
		"every series":                    {"cutover_guard_decisions_total", nil, 11},
		"no series matches":               {"cutover_guard_decisions_total", map[string]string{"result": "error"}, 0},
		"a longer name is another metric": {"cutover_guard_decisions", nil, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := MetricSum(page, tc.name, tc.labels); got != tc.want {
				t.Errorf("MetricSum = %v, want %v", got, tc.want)
			}
		})
	}
}

// The registration is the install's webhook configuration with only the
// client config changed: each webhook calls the local guard on its path and
// trusts the throwaway CA.
func TestWebhookConfiguration(t *testing.T) {
	bundle, err := testcert.Issue()
	if err != nil {
		t.Fatal(err)
	}
	g := &Guard{Port: 9443, CABundle: bundle.CAPEM}
	got, err := g.WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	installed, err := manifests.WebhookConfiguration()
	if err != nil {
		t.Fatal(err)
	}
	wantURL := map[string]string{
		HTTPRouteWebhook: "https://127.0.0.1:9443/validate-httproute",
		GRPCRouteWebhook: "https://127.0.0.1:9443/validate-grpcroute",
		ServiceWebhook:   "https://127.0.0.1:9443/validate-service",
	}
	if got.Name != WebhookConfiguration || len(got.Webhooks) != len(wantURL) {
		t.Fatalf("registration %s with %d webhooks, want %s with %d", got.Name, len(got.Webhooks), WebhookConfiguration, len(wantURL))
	}
	for i, w := range got.Webhooks {
		url, ok := wantURL[w.Name]
		if !ok {
			t.Errorf("unexpected webhook %q", w.Name)
			continue
		}
		want := admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: bundle.CAPEM}
		if diff := cmp.Diff(want, w.ClientConfig); diff != "" {
			t.Errorf("%s client config (-want +got):\n%s", w.Name, diff)
		}
		w.ClientConfig = installed.Webhooks[i].ClientConfig
		if diff := cmp.Diff(installed.Webhooks[i], w); diff != "" {
			t.Errorf("%s differs from the install's beyond its client config (-installed +registered):\n%s", w.Name, diff)
		}
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"get", "events", "--field-selector", "reason=CutoverDenied", "-o", "jsonpath={.items[*].message}", "it's"})
	want := `get events --field-selector reason=CutoverDenied -o 'jsonpath={.items[*].message}' 'it'\''s'`
	if got != want {
		t.Errorf("shellJoin:\n got %s\nwant %s", got, want)
	}
}
