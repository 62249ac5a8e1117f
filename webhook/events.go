package webhook

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/tools/record"
)

// LegacyRecorder records through a core/v1 event recorder.
//
// The events.k8s.io recorder folds every Event with the same regarding
// object, reason and action into one series that keeps only the first note,
// so a route denied first for an unready Deployment and then for a public
// database host would show only the first denial. The core/v1 recorder keeps
// Events with different messages apart (and counts repeats of the same one),
// which is what an operator reading `kubectl describe httproute` needs.
func LegacyRecorder(r record.EventRecorder) events.EventRecorder { return legacyRecorder{r} }

type legacyRecorder struct{ r record.EventRecorder }

// Eventf records note on regarding; related and action have no core/v1 field.
func (l legacyRecorder) Eventf(regarding, _ runtime.Object, eventtype, reason, _, note string, args ...any) {
	l.r.Eventf(regarding, eventtype, reason, note, args...)
}
