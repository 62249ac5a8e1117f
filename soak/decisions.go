package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
	"github.com/cutover-guard/cutover-guard/e2e/tutorial"
)

// history records, from a watch, whether each resourceVersion of green's
// Deployment was fully Ready (cluster.FullyReady); it is safe for
// concurrent use.
type history struct {
	mu    sync.Mutex
	ready map[string]bool
	state map[string]string
}

func (h *history) record(d *appsv1.Deployment) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready[d.ResourceVersion] = cluster.FullyReady(d)
	h.state[d.ResourceVersion] = cluster.DeploymentState(d)
}

// lookup returns whether resourceVersion rv was fully Ready, and whether
// the watch saw it at all.
func (h *history) lookup(rv string) (ready, seen bool, state string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ready, seen = h.ready[rv]
	return ready, seen, h.state[rv]
}

// watchGreen records every version of green's Deployment from now until
// ctx is done. It returns once the current version is recorded.
func watchGreen(ctx context.Context, cs kubernetes.Interface) (*history, error) {
	h := &history{ready: map[string]bool{}, state: map[string]string{}}
	deployments := cs.AppsV1().Deployments(tutorial.Namespace)
	selector := fields.OneTermEqualSelector("metadata.name", tutorial.Green).String()
	list, err := deployments.List(ctx, metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list deployment %s: %w", tutorial.Green, err)
	}
	for i := range list.Items {
		h.record(&list.Items[i])
	}
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = selector
		return deployments.Watch(ctx, o)
	}}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, lw)
	if err != nil {
		return nil, fmt.Errorf("watch deployment %s: %w", tutorial.Green, err)
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if d, ok := ev.Object.(*appsv1.Deployment); ok {
					h.record(d)
				}
			}
		}
	}()
	return h, nil
}

// catchUp waits until the watch has recorded the version of green's
// Deployment the API server holds now (or it is gone), so that every
// version a decision read before is in the history.
func (h *history) catchUp(ctx context.Context, cs kubernetes.Interface) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(tutorial.Namespace).Get(ctx, tutorial.Green, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		_, seen, _ := h.lookup(d.ResourceVersion)
		return seen, nil
	})
}

// decisionLine is the part of the guard's decision log line the soak reads.
type decisionLine struct {
	Msg       string   `json:"msg"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Targets   []string `json:"targets"`
	Observed  []string `json:"observed"`
	RequestID string   `json:"requestID"`
}

// allowedMessages are the guard's log messages for a switch it allowed.
var allowedMessages = []string{"cutover allowed", "cutover with_warnings"}

// logJudgement is what the guard's own log says about its decisions on
// switches of the route to green.
type logJudgement struct {
	// allowed is the allowed decisions on a switch to green; notReady
	// those that read a version the watch saw not fully Ready, unknown
	// those that read a version the watch never saw.
	allowed  int
	notReady []string
	unknown  []string
}

// judgeLog reads the guard's log and checks every decision it allowed on
// a switch of the route to green against the watch's history.
func judgeLog(path string, h *history) (logJudgement, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return logJudgement{}, err
	}
	var j logJudgement
	target := "service " + tutorial.Namespace + "/" + tutorial.Green + ":"
	observed := "deployment " + tutorial.Namespace + "/" + tutorial.Green + "@"
	s := bufio.NewScanner(bytes.NewReader(raw))
	s.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for s.Scan() {
		var d decisionLine
		if json.Unmarshal(s.Bytes(), &d) != nil || d.Namespace != tutorial.Namespace || d.Name != tutorial.Route || !slices.Contains(allowedMessages, d.Msg) || !hasPrefix(d.Targets, target) {
			continue
		}
		j.allowed++
		rv := ""
		for _, o := range d.Observed {
			if v, ok := strings.CutPrefix(o, observed); ok {
				rv = v
			}
		}
		ready, seen, state := h.lookup(rv)
		switch {
		case !seen:
			j.unknown = append(j.unknown, fmt.Sprintf("request %s read deployment %s at resourceVersion %q, which the watch never delivered", d.RequestID, tutorial.Green, rv))
		case !ready:
			j.notReady = append(j.notReady, fmt.Sprintf("request %s read deployment %s at resourceVersion %s: %s", d.RequestID, tutorial.Green, rv, state))
		}
	}
	return j, s.Err()
}

func hasPrefix(list []string, prefix string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, prefix) {
			return true
		}
	}
	return false
}
