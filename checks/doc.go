// Package checks decides whether a Service can take traffic: the reference
// is valid, its Deployment is fully Ready, its EndpointSlices have ready
// endpoints on the right port, and its pods can reach their database.
//
// Every check is a function over a client.Reader (live reads through the API
// server) and, for the database, a Prober. Checks return typed Findings and
// never render, log, count or emit anything: that happens at the edge, in
// package webhook. This package must not import webhook, and no Finding may
// carry a password, token or full connection string.
package checks
