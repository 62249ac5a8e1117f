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

// AnyPort allows every TCP port, for tests that probe throwaway servers on
// ports the OS chose, where the port allowlist is not what they test.
func AnyPort() []uint16 {
	out := make([]uint16, 0, 65535)
	for p := 1; p <= 65535; p++ {
		out = append(out, uint16(p))
	}
	return out
}
