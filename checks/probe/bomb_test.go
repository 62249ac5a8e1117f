package probe

import (
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"
)

// A server on a private address must not make the guard allocate what it
// announces: the probe stops reading and denies, having allocated a few
// MiB at most.
func TestProbeMemoryBomb(t *testing.T) {
	tests := map[string]struct {
		serve  func(net.Conn)
		dsn    func(addr string) string
		driver string
	}{
		"a postgres server announcing a 1 GiB message": {
			serve:  probetest.PostgresBomb,
			dsn:    func(a string) string { return "postgres://app:s3cret@" + a + "/app?sslmode=prefer" },
			driver: "postgres",
		},
		"a mysql server greeting with endless 16 MiB packets": {
			serve:  probetest.MySQLBomb,
			dsn:    func(a string) string { return "mysql://app:s3cret@" + a + "/app?ssl-mode=DISABLED" },
			driver: "mysql",
		},
		"a mysql server greeting with endless 16 MiB packets, TLS preferred": {
			serve:  probetest.MySQLBomb,
			dsn:    func(a string) string { return "mysql://app:s3cret@" + a + "/app" },
			driver: "mysql",
		},
		// Inside TLS the driver reads packets through its own TLS
		// connection: the headers are checked in the probe's splice.
		"a mysql server that completes TLS, then answers the login with endless 16 MiB packets": {
			serve:  probetest.MySQLTLSBomb(t),
			dsn:    func(a string) string { return "mysql://app:s3cret@" + a + "/app?ssl-mode=REQUIRED" },
			driver: "mysql",
		},
		"the same, TLS preferred": {
			serve:  probetest.MySQLTLSBomb(t),
			dsn:    func(a string) string { return "mysql://app:s3cret@" + a + "/app" },
			driver: "mysql",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			verifyNoLeaks(t)
			addr := probetest.NewBomb(t, tc.serve).Addr()
			p := NewProber(ProberOptions{PrivateCIDRs: loopback, Timeout: 10 * time.Second, Ports: []uint16{portOf(t, addr)}})

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got := probeOutcome(t, p, tc.dsn(addr))
			runtime.ReadMemStats(&after)

			want := denial(ReasonProbeFailed,
				"database at "+addr+" sent more than 1024 KiB, which no "+tc.driver+" server sends to a login and SELECT 1",
				"check the scheme, host and port in "+secretSource)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			grew := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d KiB during the probe", grew>>10)
			if grew > 4<<20 {
				t.Errorf("the probe allocated %d KiB, want under 4 MiB", grew>>10)
			}
		})
	}
}

func portOf(t testing.TB, addr string) uint16 {
	t.Helper()
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(n)
}
