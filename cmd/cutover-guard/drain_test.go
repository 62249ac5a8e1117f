package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestDrainOnShutdown(t *testing.T) {
	tests := map[string]struct {
		// shutdown cancels stopping before the request's context, as
		// SIGTERM does; otherwise only the request's context ends, as when
		// the API server gives up.
		shutdown bool
		wantDone bool
	}{
		"a decision in flight at shutdown keeps running": {shutdown: true, wantDone: false},
		"a decision whose client went away ends":         {shutdown: false, wantDone: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stopping, stop := context.WithCancel(t.Context())
			defer stop()
			// controller-runtime's request contexts descend from the manager's.
			base, cancelBase := context.WithCancel(t.Context())
			defer cancelBase()
			seen := make(chan context.Context, 1)
			release := make(chan struct{})
			h := drainOnShutdown(stopping, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Context()
				<-release
				w.WriteHeader(http.StatusOK)
			}))
			rec := httptest.NewRecorder()
			served := make(chan struct{})
			go func() {
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/validate-httproute", nil).WithContext(base))
				close(served)
			}()
			ctx := <-seen
			if tc.shutdown {
				stop()
			}
			cancelBase()
			if tc.wantDone {
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Second):
					t.Fatal("the decision's context did not end when its client went away")
				}
			} else if err := ctx.Err(); err != nil {
				t.Fatalf("the decision's context ended with the server's: %v", err)
			}
			close(release)
			<-served
			if rec.Code != http.StatusOK {
				t.Errorf("status %d, want the handler's 200", rec.Code)
			}
		})
	}
}
