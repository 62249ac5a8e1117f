package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// appService is the Service "app" of the selector-switch blue-green,
// selecting version.
func appService(version string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "app", UID: "uid-app", ResourceVersion: "7"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "myapp", "version": version}, Ports: []corev1.ServicePort{{Port: 80}}},
	}
}

// pods are the ReplicaSet of Deployment app-<version> and its two pods,
// Ready or not.
func pods(version string, ready bool) []client.Object {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	labels := map[string]string{"app": "myapp", "version": version}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "app-" + version + "-6a1e", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "app-" + version, UID: "uid-d", Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}},
	}
	out := []client.Object{rs}
	for _, n := range []string{"a", "b"} {
		out = append(out, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: rs.Name + "-" + n, Labels: labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: "uid-rs", Controller: ptr.To(true)}}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "myapp:v1"}}},
			Status: corev1.PodStatus{PodIP: "10.0.0.2", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
		})
	}
	return out
}

// serviceReview is the AdmissionReview the API server sends for an update
// of old to updated (subresource, if set).
func serviceReview(t *testing.T, old, updated *corev1.Service, subresource string) []byte {
	return serviceReviewBy(t, old, updated, subresource, authenticationv1.UserInfo{Username: "release-engineer"})
}

// serviceReviewBy is serviceReview sent on behalf of user.
func serviceReviewBy(t *testing.T, old, updated *corev1.Service, subresource string, user authenticationv1.UserInfo) []byte {
	t.Helper()
	raw := func(s *corev1.Service) runtime.RawExtension {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "b2f0c2d4-0001-4000-8000-000000000001", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Service"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "services"}, SubResource: subresource,
			Name: "app", Namespace: "production", Operation: admissionv1.Update, UserInfo: user,
			Object: raw(updated), OldObject: raw(old),
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const deniedSelectorSwitch = "service production/app: deployment app-green is not ready (0/2 ready, 2 pending); wait for: kubectl rollout status deployment/app-green -n production\n" +
	"service production/app: service app would have no ready endpoints on port 80 after the switch (0 of 2 selected pods ready); check its pods: kubectl get pods -n production -l app=myapp,version=green"

func TestServiceHandler(t *testing.T) {
	labelled := appService("blue")
	labelled.Labels = map[string]string{"team": "checkout"}
	tests := map[string]struct {
		greenReady   bool
		old, updated *corev1.Service
		subresource  string
		wantAllowed  bool
		wantCode     int32
		wantMessage  string
		wantEvents   []string
		wantAudit    map[string]string
		wantNoReads  bool
		wantDecision string // result/path
	}{
		"a selector switch to an unready green is denied, with an Event on the Service": {
			old: appService("blue"), updated: appService("green"),
			wantCode: http.StatusForbidden, wantMessage: deniedSelectorSwitch,
			wantEvents: []string{"Warning CutoverDenied " + deniedSelectorSwitch},
			wantAudit: map[string]string{"decision": "denied", "targets": "service production/app",
				"findings": "deployment/NotReady,endpoints/NoReadyEndpoints,database/DatabaseNotChecked"},
			wantDecision: "denied/checked",
		},
		"a selector switch to a ready green is allowed": {
			greenReady: true, old: appService("blue"), updated: appService("green"),
			wantAllowed: true, wantCode: http.StatusOK,
			wantAudit:    map[string]string{"decision": "allowed_with_warnings", "targets": "service production/app", "findings": "database/DatabaseNotChecked"},
			wantDecision: "allowed_with_warnings/checked",
		},
		"a label-only update is allowed without reading anything": {
			old: appService("blue"), updated: labelled,
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true, wantDecision: "allowed/fast",
		},
		"the status subresource is never checked": {
			old: appService("blue"), updated: appService("green"), subresource: "status",
			wantAllowed: true, wantCode: http.StatusOK, wantNoReads: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := append(tutorialNamespace(tc.greenReady), pods("green", tc.greenReady)...)
			objs = append(objs, appService("blue"))
			h := newHarness(t, objs...)
			resp := postReview(t, h.server.URL+PathService, serviceReview(t, tc.old, tc.updated, tc.subresource))
			if resp.Allowed != tc.wantAllowed {
				t.Errorf("allowed = %v, want %v (result %+v)", resp.Allowed, tc.wantAllowed, resp.Result)
			}
			var code int32
			var msg string
			if resp.Result != nil {
				code, msg = resp.Result.Code, resp.Result.Message
			}
			if code != tc.wantCode {
				t.Errorf("code = %d, want %d", code, tc.wantCode)
			}
			if tc.wantMessage != "" && msg != tc.wantMessage {
				t.Errorf("message:\n got %q\nwant %q", msg, tc.wantMessage)
			}
			if diff := cmp.Diff(tc.wantEvents, h.events()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAudit, resp.AuditAnnotations); diff != "" {
				t.Errorf("audit annotations (-want +got):\n%s", diff)
			}
			if tc.wantNoReads && h.reads.Load() != 0 {
				t.Errorf("%d reads from the API server, want none", h.reads.Load())
			}
			if tc.wantDecision != "" {
				result, path, _ := strings.Cut(tc.wantDecision, "/")
				if got := testutil.ToFloat64(h.metrics.decisions.WithLabelValues(KindService, result, path)); got != 1 {
					t.Errorf("cutover_guard_decisions_total{kind=Service,result=%q,path=%q} = %v, want 1", result, path, got)
				}
			}
		})
	}
}

// A route sent to the Service endpoint is an error naming what it validates.
func TestServiceHandlerRefusesOtherKinds(t *testing.T) {
	h := newHarness(t, tutorialObjects()...)
	resp := h.post(t, PathService, "cutover-to-green.json")
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest ||
		!strings.Contains(resp.Result.Message, `internal error: this endpoint validates Service (core/v1), got kind "HTTPRoute" in group "gateway.networking.k8s.io"`) {
		t.Errorf("response %+v", resp.Result)
	}
	if h.reads.Load() != 0 {
		t.Errorf("%d reads, want none", h.reads.Load())
	}
}

func TestServiceTargets(t *testing.T) {
	blue, green := appService("blue"), appService("green")
	widened := appService("blue")
	widened.Spec.Selector["track"] = "stable"
	none := appService("blue")
	none.Spec.Selector = nil
	ports := appService("blue")
	ports.Spec.Ports[0].Port = 8080
	for name, tc := range map[string]struct {
		old, updated *corev1.Service
		want         bool
	}{
		"a selector switch is a target":    {blue, green, true},
		"a selector key added is one":      {blue, widened, true},
		"the selector removed is one":      {blue, none, true},
		"a port change is none":            {blue, ports, false},
		"an unchanged selector is none":    {blue, appService("blue"), false},
		"a create (no old object) is none": {nil, green, false},
	} {
		t.Run(name, func(t *testing.T) {
			targets := ServiceTargets(tc.old, tc.updated).Checked
			if (len(targets) == 1) != tc.want || len(targets) > 1 {
				t.Fatalf("targets %v, want a target: %v", targets, tc.want)
			}
			if tc.want && (targets[0].Proposed == nil || targets[0].Service.Name != "app" || targets[0].RouteKind != KindService) {
				t.Errorf("target %+v", targets[0])
			}
		})
	}
}

// The break-glass annotation lets an allowed user's denied selector switch
// through, as on a route, with the override on record.
func TestServiceSelectorSwitchOverride(t *testing.T) {
	objs := append(tutorialNamespace(false), pods("green", false)...)
	objs = append(objs, appService("blue"))
	h := startHarness(t, objs, harnessConfig{options: func(o *Options) { o.OverrideGroups = []string{"sre"} }})
	updated := appService("green")
	updated.Annotations = map[string]string{AnnotationOverride: "incident 42: blue is down"}
	resp := postReview(t, h.server.URL+PathService, serviceReviewBy(t, appService("blue"), updated, "",
		authenticationv1.UserInfo{Username: "alice", Groups: []string{"sre"}}))
	if !resp.Allowed {
		t.Fatalf("denied: %+v", resp.Result)
	}
	if got := resp.AuditAnnotations["overrideResult"]; got != OverrideApplied {
		t.Errorf("overrideResult = %q, want %q (annotations %v)", got, OverrideApplied, resp.AuditAnnotations)
	}
	if got := h.events(); len(got) != 1 || !strings.HasPrefix(got[0], "Warning "+ReasonCutoverOverridden) {
		t.Errorf("events %q, want one %s", got, ReasonCutoverOverridden)
	}
}
