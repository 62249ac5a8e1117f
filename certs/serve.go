package certs

import (
	"context"
	"errors"
	"net/http"

	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// ServeWhenReady returns a manager runnable that starts server once ready is
// closed (at once for a closed channel), so the webhook never serves without
// a certificate the API server trusts.
func ServeWhenReady(ready <-chan struct{}, server manager.Runnable) manager.Runnable {
	return serveWhenReady{ready: ready, server: server}
}

type serveWhenReady struct {
	ready  <-chan struct{}
	server manager.Runnable
}

func (s serveWhenReady) Start(ctx context.Context) error {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	return s.server.Start(ctx)
}

// NeedLeaderElection is false: every replica serves.
func (serveWhenReady) NeedLeaderElection() bool { return false }

// ReadyWhen is a readiness check that fails until ready is closed and then
// asks next.
func ReadyWhen(ready <-chan struct{}, next healthz.Checker) healthz.Checker {
	return func(req *http.Request) error {
		select {
		case <-ready:
			return next(req)
		default:
			return errors.New("serving certificate not yet in place or not yet injected into the webhook configuration")
		}
	}
}

// Closed returns a closed channel: ready at once (certificates managed elsewhere).
func Closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
