// Package webhook is the admission adapter: it decodes HTTPRoute and
// GRPCRoute creates and updates, works out which backends' share of traffic
// grows and which newly receive mirrored requests (Targets), asks package
// checks about them, and turns the findings into an admission response,
// warnings (every finding about a mirror is one), audit annotations, an
// Event and metrics.
//
// It decides nothing about a Service itself; that is package checks. It
// never reads the cluster for an update that switches no traffic.
package webhook
