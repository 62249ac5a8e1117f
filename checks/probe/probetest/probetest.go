// Package probetest holds test doubles for a probe.Prober's resolver and
// dialer, so that a test of the database check sends no packet. It is for
// tests only.
package probetest

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// FixedResolver resolves every name to ips.
func FixedResolver(ips ...string) func(context.Context, string) ([]netip.Addr, error) {
	return func(context.Context, string) ([]netip.Addr, error) {
		out := make([]netip.Addr, len(ips))
		for i, s := range ips {
			out[i] = netip.MustParseAddr(s)
		}
		return out, nil
	}
}

// RefuseDial fails every connection as a closed port would, without a packet.
func RefuseDial(context.Context, string, string) (net.Conn, error) {
	return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
}
