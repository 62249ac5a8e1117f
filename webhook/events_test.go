package webhook

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestLegacyRecorderKeepsDistinctDenials(t *testing.T) {
	fake := record.NewFakeRecorder(4)
	r := LegacyRecorder(fake)
	route := &gwv1.HTTPRoute{}
	r.Eventf(route, nil, corev1.EventTypeWarning, ReasonCutoverDenied, "Cutover", "%s", "first denial")
	r.Eventf(route, nil, corev1.EventTypeWarning, ReasonCutoverDenied, "Cutover", "%s", "second denial")
	close(fake.Events)
	var got []string
	for e := range fake.Events {
		got = append(got, e)
	}
	want := []string{"Warning CutoverDenied first denial", "Warning CutoverDenied second denial"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
