package probe

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// DefaultDatabasePorts are the ports a probe may connect to by default
// (--database-ports): MySQL, PostgreSQL, PgBouncer, DigitalOcean's managed
// PostgreSQL and its connection pools, and CockroachDB.
var DefaultDatabasePorts = []uint16{3306, 5432, 6432, 25060, 25061, 26257}

// portSet is the ports a Prober may dial: a probe is a connection attempt
// anyone who writes a Deployment can aim, and must not map the network.
type portSet []uint16 // sorted, distinct

func newPortSet(ports []uint16) portSet {
	if len(ports) == 0 {
		ports = DefaultDatabasePorts
	}
	s := slices.Clone(ports)
	slices.Sort(s)
	return slices.Compact(s)
}

func (s portSet) allows(port uint16) bool {
	_, ok := slices.BinarySearch(s, port)
	return ok
}

// String lists the ports with runs as ranges: "3306,5432,6432,25060-25061".
func (s portSet) String() string { return FormatPorts(s) }

// FormatPorts renders ports as --database-ports takes them, runs of
// consecutive ports as ranges.
func FormatPorts(ports []uint16) string {
	s := slices.Clone(ports)
	slices.Sort(s)
	s = slices.Compact(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", s[i], s[j]))
		} else {
			parts = append(parts, strconv.Itoa(int(s[i])))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// ParsePorts reads a comma-separated list of ports and ranges ("5432,
// 3306, 20000-20100"), the form of --database-ports.
func ParsePorts(list string) ([]uint16, error) {
	var out []uint16
	for part := range strings.SplitSeq(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		}
		if err1 != nil || err2 != nil || a == 0 || b < a {
			return nil, fmt.Errorf("%q is not a port or a range such as 20000-20100", part)
		}
		for p := a; p <= b; p++ {
			out = append(out, uint16(p))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("name at least one port")
	}
	return out, nil
}

// checkPorts denies a connection string naming a port outside the
// allowlist, before anything is resolved or dialled.
func (p *Prober) checkPorts(d *dsn) (Result, bool) {
	for _, e := range d.endpoints {
		if !p.ports.allows(e.port) {
			return deny(ReasonPortNotAllowed,
				fmt.Sprintf("database port %d is not one the guard probes (%s)", e.port, p.ports),
				inSource("use the database's port in ", ", or ask the platform team to add it to --database-ports")), false
		}
	}
	return Result{}, true
}
