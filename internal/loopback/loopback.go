// Package loopback hands out free TCP ports on 127.0.0.1 for the processes
// that tests, the demo and the benchmarks start.
package loopback

import "net"

// FreePorts returns n distinct free TCP ports on 127.0.0.1. Every listener is
// held until all n are picked, so no port is handed out twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
