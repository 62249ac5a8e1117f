package netns

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A listener opened inside the namespace on an address of PodRange answers
// the host through the veth; an address nobody listens on is refused; and
// Close leaves nothing behind.
func TestNamespaceReachableFromTheHost(t *testing.T) {
	n := NewT(t)
	if !n.Subnet.Contains(n.HostAddr) || !n.PodRange.Contains(n.PodRange.Addr().Next()) || n.PodRange.Contains(n.HostAddr) || n.PodRange.Contains(n.NamespaceAddr) {
		t.Fatalf("addresses %+v", n)
	}
	pod := n.PodRange.Addr().Next().Next() // .2
	l, err := n.Listen(netip.AddrPortFrom(pod, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("hello from " + c.LocalAddr().String()))
		_ = c.Close()
	}()

	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(pod, 8080).String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial the namespace's listener from the host: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	_ = c.Close()
	if want := "hello from " + pod.String() + ":8080"; string(got) != want {
		t.Errorf("read %q, want %q", got, want)
	}

	// The same address is not local on the host: only inside.
	if _, err := net.Listen("tcp", netip.AddrPortFrom(pod, 0).String()); err == nil {
		t.Error("the host could bind a pod address: the listener was not inside the namespace")
	}
	_, err = net.DialTimeout("tcp", netip.AddrPortFrom(pod.Next(), 8080).String(), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial an address nothing listens on: %v, want connection refused", err)
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, n.Name)); !os.IsNotExist(err) {
		t.Errorf("namespace %s still mounted: %v", n.Name, err)
	}
	if _, err := net.InterfaceByName(n.hostLink); err == nil {
		t.Errorf("link %s still exists", n.hostLink)
	}
}
