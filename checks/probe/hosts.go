package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// DefaultPrivateCIDRs returns the ranges a database address must lie in by
// default (--private-cidrs): RFC 1918, RFC 6598 shared address space and IPv6
// unique local addresses.
func DefaultPrivateCIDRs() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("fc00::/7"),
	}
}

// checkHosts resolves every host of d and requires each address to be
// private, after checking every port against the allowlist. A DigitalOcean public hostname is denied without resolving it.
func (p *Prober) checkHosts(ctx context.Context, d *dsn) (map[string][]netip.Addr, Result, bool) {
	if res, ok := p.checkPorts(d); !ok {
		return nil, res, false
	}
	addrs := map[string][]netip.Addr{}
	for _, e := range d.endpoints {
		host := Printable(e.host)
		if public, private := digitalOceanPublic(e.host); public {
			return nil, deny(ReasonHostPublic,
				fmt.Sprintf("database host %s is the public hostname", host),
				inSource("use the private hostname "+Printable(private)+" from the Private network tab in ", "")), false
		}
		if _, done := addrs[e.host]; done {
			continue
		}
		ips, err := p.lookup(ctx, e.host)
		if err != nil {
			if ctx.Err() != nil {
				return nil, deny(ReasonHostUnresolvable,
					fmt.Sprintf("database host %s did not resolve within %s", host, p.timeout),
					inSource("check the cluster's DNS, and the host in ", "")), false
			}
			return nil, deny(ReasonHostUnresolvable,
				fmt.Sprintf("database host %s does not resolve", host),
				inSource("check the host in ", "")), false
		}
		for _, ip := range ips {
			if p.isPrivate(ip) {
				continue
			}
			what := fmt.Sprintf("database host %s resolves to %s, which is not a private address", host, ip)
			if ip.String() == e.host {
				what = fmt.Sprintf("database host %s is not a private address", host)
			}
			return nil, deny(ReasonHostPublic, what,
				inSource("use the database's private network hostname in ", ", or add its range to --private-cidrs")), false
		}
		addrs[e.host] = ips
	}
	return addrs, Result{}, true
}

// digitalOceanPublic reports whether host is a DigitalOcean managed database
// public hostname, and the private one to use instead.
func digitalOceanPublic(host string) (bool, string) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	const suffix = ".db.ondigitalocean.com"
	if !strings.HasSuffix(h, suffix) || len(h) == len(suffix) || strings.HasPrefix(h, "private-") {
		return false, ""
	}
	return true, "private-" + h
}

func (p *Prober) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.WithZone("").Unmap()}, nil
	}
	ips, err := p.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ip := range ips {
		ip = ip.WithZone("").Unmap()
		if ip.IsValid() && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no addresses")
	}
	return out, nil
}

func (p *Prober) isPrivate(ip netip.Addr) bool {
	for _, c := range p.private {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// dialTracker dials the checked addresses and records how far each
