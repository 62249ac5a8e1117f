// Package checks decides whether a Service can take traffic: the reference
// is valid, its Deployment is fully Ready, its EndpointSlices have ready
// endpoints on the right port, and its pods can reach their database.
//
// Every check is a Func over one target's Input: live reads through the API
// server (a client.Reader) and, for the database, a probe.Prober, which
// judges a connection string; this package finds the strings in the pod
// template and says where each came from. A referenced object that does not
// exist is a finding; any other failed read is an error. Checks return typed
// Findings and never render, log, count or emit anything: that happens at
// the edge, in package webhook. This package must not import webhook, and no
// Finding may carry a password, token or full connection string.
package checks
