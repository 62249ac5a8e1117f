package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cutover-guard/cutover-guard/bench/gobench"
)

// readsFloor measures what the reads a guarded switch makes cost on their
// own, as the guard makes them (its identity, protobuf, one HTTP/2
// connection, no rate limit): one quorum GET, one GET from the watch cache,
// and the four quorum GETs of a decision at once (green's Service,
// Deployment, Secret and EndpointSlice). No guard runs them: this is the
// floor a guard that reads fresh state cannot go below.
func readsFloor(ctx context.Context, l *lab, r *report) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.guardConfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = -1, 0
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	const app = "app-green"
	list, err := cs.DiscoveryV1().EndpointSlices(labNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + app})
	if err != nil {
		return err
	}
	if len(list.Items) == 0 {
		return fmt.Errorf("reads floor: %s has no EndpointSlice", app)
	}
	slice := list.Items[0].Name
	quorum := metav1.GetOptions{}
	reads := []func() error{
		func() error { _, err := cs.CoreV1().Services(labNamespace).Get(ctx, app, quorum); return err },
		func() error { _, err := cs.AppsV1().Deployments(labNamespace).Get(ctx, app, quorum); return err },
		func() error {
			_, err := cs.CoreV1().Secrets(labNamespace).Get(ctx, "db-credentials", quorum)
			return err
		},
		func() error {
			_, err := cs.DiscoveryV1().EndpointSlices(labNamespace).Get(ctx, slice, quorum)
			return err
		},
	}
	rows := []struct {
		name string
		do   func() error
	}{
		{"one quorum GET (the Deployment)", reads[1]},
		{"one GET from the watch cache (the Deployment, resourceVersion=0)", func() error {
			_, err := cs.AppsV1().Deployments(labNamespace).Get(ctx, app, metav1.GetOptions{ResourceVersion: "0"})
			return err
		}},
		{"a decision's four quorum GETs at once (Service, Deployment, Secret, EndpointSlice)", func() error {
			errs := make([]error, len(reads))
			var wg sync.WaitGroup
			for i, read := range reads {
				wg.Go(func() { errs[i] = read() })
			}
			wg.Wait()
			return errors.Join(errs...)
		}},
	}
	n := 300
	if l.s.quick {
		n = 100
	}
	p50s := make([][]float64, len(rows))
	for range l.s.runs {
		for i, row := range rows {
			lat := make([]time.Duration, 0, n)
			for range n {
				t0 := time.Now()
				if err := row.do(); err != nil {
					return fmt.Errorf("reads floor, %s: %w", row.name, err)
				}
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			p50s[i] = append(p50s[i], float64(lat[len(lat)/2]))
		}
	}
	t := r.table("3c. The reads of a switch, alone",
		fmt.Sprintf("What a guarded switch's reads cost with no guard around them: a client as the guard is (its ServiceAccount's token, protobuf, one HTTP/2 connection) "+
			"reads the tutorial's app-green objects %d times per row and run, back to back, no other load; p50, medians over %d runs. "+
			"The last row is the floor of a decision that judges fresh state.", n, l.s.runs),
		"read", "p50")
	for i, row := range rows {
		t.add(row.name, dur(ns(gobench.Median(p50s[i]))))
	}
	return nil
}
