package probe

import (
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgAllowedKeys are the libpq parameters handed to pgx: where to connect,
// who logs in, how TLS and authentication are negotiated, and which server
// counts (target_session_attrs). Everything else is dropped before parsing:
// keys that read files on the webhook's filesystem (sslcert, sslkey,
// passfile, service, servicefile; sslrootcert is settled here, never read),
// every run-time parameter, options included (a tenant could set
// statement_timeout, work_mem or a search_path and make the server work for
// the guard), and connect_timeout and application_name, which the probe
// sets itself.
var pgAllowedKeys = []string{
	"host", "port", "dbname", "database", "user", "password",
	"sslmode", "ssl", "sslnegotiation", "sslsni", "sslrootcert",
	"target_session_attrs", "channel_binding", "require_auth",
	"min_protocol_version", "max_protocol_version",
}

var pgSSLModes = map[string]tlsMode{
	"disable":     tlsDisable,
	"allow":       tlsPrefer,
	"prefer":      tlsPrefer,
	"require":     tlsRequire,
	"verify-ca":   tlsVerifyCA,
	"verify-full": tlsVerifyFull,
}

func parsePostgres(raw, rest string) (*dsn, *dsnError) {
	// Split like pgx (and libpq): the userinfo ends at the first '@' before
	// any '/', the query starts at the first '?' after it.
	userinfo, p := "", rest
	if i := strings.IndexAny(p, "@/"); i >= 0 && p[i] == '@' {
		userinfo, p = p[:i], p[i+1:]
	}
	prefix := raw[:len(raw)-len(p)] // scheme://userinfo@
	base, query, _ := strings.Cut(p, "?")
	name, pw, hasPw := strings.Cut(userinfo, ":")
	hasUser, hasPassword := name != "", hasPw && pw != ""

	// Keep only allowed query pairs, as written; settle sslmode ourselves.
	allowed := make(map[string]bool, len(pgAllowedKeys))
	for _, k := range pgAllowedKeys {
		allowed[k] = true
	}
	var kept []string
	sslmode, sslTrue, rootcert := "", false, ""
	queryHost, hasQueryHost := "", false
	if query != "" {
		for pair := range strings.SplitSeq(query, "&") {
			rk, rv, ok := strings.Cut(pair, "=")
			if !ok || strings.Contains(rv, "=") {
				return nil, errInvalid("has a malformed query parameter")
			}
			k, err1 := url.PathUnescape(strings.TrimSpace(rk))
			v, err2 := url.PathUnescape(strings.TrimSpace(rv))
			if err1 != nil || err2 != nil {
				return nil, errInvalid("has a query parameter with an invalid %-escape")
			}
			switch k {
			case "sslmode":
				sslmode, sslTrue = v, false
				continue
			case "ssl":
				sslTrue = v == "true"
				continue
			case "sslrootcert":
				rootcert = v
				continue
			case "user":
				hasUser = v != ""
			case "password":
				hasPassword = v != ""
			case "host":
				queryHost, hasQueryHost = v, true
			}
			if allowed[k] {
				kept = append(kept, pair)
			}
		}
	}
	if !hostsGiven(base, queryHost, hasQueryHost) {
		return nil, errInvalid("names no host")
	}
	if sslTrue {
		sslmode = "require"
	}
	param := "sslmode=" + sslmode
	if sslmode == "" {
		sslmode, param = "prefer", "default sslmode=prefer"
	}
	mode, ok := pgSSLModes[sslmode]
	if !ok {
		return nil, &dsnError{
			reason:  ReasonURLInvalid,
			message: "has an invalid sslmode",
			fix:     "use sslmode=disable, allow, prefer, require, verify-ca or verify-full",
		}
	}
	caIgnored := false
	switch {
	case rootcert == "system":
		kept = append(kept, "sslrootcert=system")
		mode, sslmode, param = tlsVerifyFull, "verify-full", "sslrootcert=system"
	case rootcert != "" && mode >= tlsRequire:
		// The CA file is in the application's pod: check TLS, not the chain.
		caIgnored, mode, sslmode = true, tlsRequire, "require"
	}
	kept = append(kept, "sslmode="+sslmode)
	conn := prefix + base + "?" + strings.Join(kept, "&")

	cfg, err := pgconn.ParseConfigWithOptions(conn, pgconn.ParseConfigOptions{ConnStringAllowedKeys: pgAllowedKeys})
	if err != nil {
		return nil, errInvalid("is not a valid connection string")
	}
	// pgx fills gaps from the webhook's own environment (PGPASSWORD, PGUSER,
	// ~/.pgpass, the OS user): none of that belongs to the application.
	if !hasPassword {
		cfg.Password = ""
	}
	if !hasUser {
		cfg.User = ""
	}
	d := &dsn{
		driver:        driverPostgres,
		user:          cfg.User,
		database:      cfg.Database,
		tls:           mode,
		tlsParam:      param,
		caFileIgnored: caIgnored,
		pg:            cfg,
	}
	if d.database == "" {
		d.database = d.user // the server's default, as in libpq
	}
	seen := map[endpoint]bool{}
	hosts := append([]*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port}}, cfg.Fallbacks...)
	for _, fb := range hosts {
		if fb.Host == "" || strings.HasPrefix(fb.Host, "/") {
			return nil, errInvalid("names a unix socket, which cannot be checked")
		}
		e := endpoint{host: fb.Host, port: fb.Port}
		if !seen[e] {
			seen[e] = true
			d.endpoints = append(d.endpoints, e)
		}
	}
	return d, nil
}

// hostsGiven reports whether every element of the host list (from the host
// query parameter if present, else from the netloc) names a host: pgx fills
// an empty one from the webhook's environment or a local socket.
func hostsGiven(base, queryHost string, hasQueryHost bool) bool {
	var list []string
	if hasQueryHost {
		list = strings.Split(queryHost, ",")
	} else {
		netloc, _, _ := strings.Cut(base, "/")
		for el := range strings.SplitSeq(netloc, ",") {
			var h string
			if strings.HasPrefix(el, "[") {
				h, _, _ = strings.Cut(el[1:], "]")
			} else {
				h, _, _ = strings.Cut(el, ":")
			}
			list = append(list, h)
		}
	}
	for _, h := range list {
		if strings.TrimSpace(h) == "" {
			return false
		}
	}
	return true
}
