// Package webhook is the admission adapter: it decodes HTTPRoute and
// GRPCRoute updates, works out which backends newly receive traffic
// (Targets), asks package checks about them, and turns the findings into an
// admission response, warnings, audit annotations, an Event and metrics.
//
// It decides nothing about a Service itself; that is package checks. It
// never reads the cluster for an update that switches no traffic.
package webhook
