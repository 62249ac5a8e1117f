// Package netns makes a throwaway Linux network namespace joined to the
// host by a veth pair, for end-to-end tests that need pods whose addresses
// really answer: the API server refuses EndpointSlice addresses in
// 127.0.0.0/8, so a test cannot stand pods in on loopback.
//
// The namespace owns a random 10.254.X.0/24: the host end of the veth is
// 10.254.X.254, the namespace end 10.254.X.253, and the lower half,
// 10.254.X.0/25 (PodRange), is local inside the namespace, so a listener
// there can bind any address of it (give PodRange to kwok as its pod
// CIDR). Listen opens such a listener from this process: a goroutine
// locked to its OS thread joins the namespace, opens the socket and leaves.
//
// It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the ip command of
// iproute2; Available says why not. Nothing here is used by the guard.
package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// prefix starts the name of every namespace this package makes, followed
// by the pid of the process that made it (so orphans can be found) and X.
const prefix = "cutover-guard-test-"

// runDir is where `ip netns add` mounts named namespaces.
const runDir = "/run/netns"

// Namespace is a network namespace made by New.
type Namespace struct {
	// Name is its name for `ip netns`.
	Name string
	// Subnet is the /24 of the veth pair.
	Subnet netip.Prefix
	// HostAddr is the host end's address, NamespaceAddr the other end's.
	HostAddr, NamespaceAddr netip.Addr
	// PodRange is the half of Subnet that is local inside the namespace.
	PodRange netip.Prefix
	hostLink string
	close    sync.Once
	closeErr error
}

// Available returns why New cannot work here, or nil.
func Available() error {
	if runtime.GOOS != "linux" {
		return errors.New("network namespaces need Linux")
	}
	if os.Geteuid() != 0 {
		return errors.New("making a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the ip command (Debian package iproute2) is not installed")
	}
	return nil
}

// New makes a namespace on a free 10.254.X.0/24, first removing the
// namespaces of this package whose process is gone.
func New(ctx context.Context) (*Namespace, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	reapOrphans(ctx)
	var errs []error
	for range 8 {
		x := 1 + rand.IntN(250)
		if used, err := subnetUsed(ctx, x); err != nil {
			return nil, err
		} else if used {
			continue
		}
		n, err := create(ctx, x)
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no free 10.254.X.0/24 for a test namespace: %w", errors.Join(errs...))
}

func create(ctx context.Context, x int) (_ *Namespace, retErr error) {
	base := netip.AddrFrom4([4]byte{10, 254, byte(x), 0})
	n := &Namespace{
		Name:          prefix + strconv.Itoa(os.Getpid()) + "-" + strconv.Itoa(x),
		Subnet:        netip.PrefixFrom(base, 24),
		HostAddr:      netip.AddrFrom4([4]byte{10, 254, byte(x), 254}),
		NamespaceAddr: netip.AddrFrom4([4]byte{10, 254, byte(x), 253}),
		PodRange:      netip.PrefixFrom(base, 25),
		// Link names are at most 15 bytes; X in the name makes two runs
		// that picked the same subnet collide here, not on the route.
		hostLink: "cgt" + strconv.Itoa(x) + "h",
	}
	nsLink := "cgt" + strconv.Itoa(x) + "n"
	if err := ip(ctx, "netns", "add", n.Name); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			_ = n.Close()
		}
	}()
	for _, args := range [][]string{
		{"link", "add", n.hostLink, "type", "veth", "peer", "name", nsLink},
		{"link", "set", nsLink, "netns", n.Name},
		{"addr", "add", n.HostAddr.String() + "/24", "dev", n.hostLink},
		{"link", "set", n.hostLink, "up"},
		{"-n", n.Name, "addr", "add", n.NamespaceAddr.String() + "/24", "dev", nsLink},
		{"-n", n.Name, "link", "set", nsLink, "up"},
		{"-n", n.Name, "link", "set", "lo", "up"},
		// Every address of PodRange is local in the namespace: a
		// listener may bind any of them, and the namespace answers ARP
		// for them on the veth.
		{"-n", n.Name, "route", "add", "local", n.PodRange.String(), "dev", "lo"},
	} {
		if err := ip(ctx, args...); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Close removes the namespace, and with it the veth pair. Later calls
// return the first's result.
func (n *Namespace) Close() error {
	n.close.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.closeErr = ip(ctx, "netns", "delete", n.Name)
		// The host end goes with its peer; remove it if it did not.
		// The kernel removes it asynchronously, so it may vanish between
		// the look and the delete: gone afterwards is what Close wants.
		if _, err := net.InterfaceByName(n.hostLink); err == nil {
			if err := ip(ctx, "link", "delete", n.hostLink); err != nil {
				if _, still := net.InterfaceByName(n.hostLink); still == nil {
					n.closeErr = errors.Join(n.closeErr, err)
				}
			}
		}
	})
	return n.closeErr
}

// Listen opens a TCP listener inside the namespace on addr (host:port),
// e.g. a pod's address from PodRange. The listener is used from any
// goroutine like any other.
func (n *Namespace) Listen(addr string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Locked and not unlocked if leaving fails: the thread, still in
		// the namespace, then ends with the goroutine.
		runtime.LockOSThread()
		l, left, err := n.listenInside(addr)
		if left {
			runtime.UnlockOSThread()
		}
		ch <- result{l, err}
	}()
	r := <-ch
	return r.l, r.err
}

// listenInside runs on a locked thread; left is false when the thread
// could not return to its own namespace.
func (n *Namespace) listenInside(addr string) (l net.Listener, left bool, err error) {
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer func() { _ = home.Close() }()
	target, err := os.Open(filepath.Join(runDir, n.Name))
	if err != nil {
		return nil, true, err
	}
	defer func() { _ = target.Close() }()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("joining network namespace %s: %w", n.Name, err)
	}
	l, err = net.Listen("tcp", addr)
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		if l != nil {
			_ = l.Close()
		}
		return nil, false, fmt.Errorf("leaving network namespace %s: %w", n.Name, err)
	}
	return l, true, err
}

// subnetUsed reports whether the host already has an address or route in
// 10.254.x.0/24.
func subnetUsed(ctx context.Context, x int) (bool, error) {
	out, err := exec.CommandContext(ctx, "ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return false, fmt.Errorf("ip route show: %w", err)
	}
	return strings.Contains(string(out), "10.254."+strconv.Itoa(x)+"."), nil
}

// reapOrphans removes the namespaces of processes that ended without
// removing theirs (killed mid-test).
func reapOrphans(ctx context.Context) {
	entries, err := os.ReadDir(runDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidText, xText, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue // not ours, or its process still runs
		}
		_ = ip(ctx, "netns", "delete", e.Name())
		if x, err := strconv.Atoi(xText); err == nil {
			if _, err := net.InterfaceByName("cgt" + strconv.Itoa(x) + "h"); err == nil {
				_ = ip(ctx, "link", "delete", "cgt"+strconv.Itoa(x)+"h")
			}
		}
	}
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
