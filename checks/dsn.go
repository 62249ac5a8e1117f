package checks

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file turns a connection string into a driver configuration. It never
// passes driver error text on (parsers quote their input, and the input holds
// a password): every failure is a dsnError in our own words that names at most
// the scheme.

// dbDriver is the wire protocol a connection string selects.
type dbDriver string

const (
	driverPostgres dbDriver = "postgres"
	driverMySQL    dbDriver = "mysql"
)

// supportedSchemes is what an unsupported scheme is told to use instead.
const supportedSchemes = "postgres://, postgresql:// or mysql://"

// tlsMode is the TLS a connection string demands, the same scale for both
// drivers (libpq sslmode, MySQL ssl-mode).
type tlsMode int

const (
	tlsDisable    tlsMode = iota // plain text only
	tlsPrefer                    // TLS if the server offers it, else plain text
	tlsRequire                   // TLS, certificate not verified
	tlsVerifyCA                  // TLS, chain verified against the system roots
	tlsVerifyFull                // TLS, chain and host name verified
)

// endpoint is one host and port a connection string names.
type endpoint struct {
	host string
	port uint16
}

func (e endpoint) String() string {
	return net.JoinHostPort(printable(e.host), strconv.Itoa(int(e.port)))
}

// dsn is a parsed connection string. Its String method leaves the password out.
type dsn struct {
	driver    dbDriver
	endpoints []endpoint
	user      string
	database  string
	tls       tlsMode
	// tlsParam is the TLS setting as the user would write it, for messages:
	// "sslmode=require", "ssl-mode=REQUIRED".
	tlsParam string
	// caFileIgnored is set when the string names a CA file (sslrootcert,
	// ssl-ca): that file lives in the application's pod, so the probe checks
	// that TLS works but cannot verify the chain.
	caFileIgnored bool

	pg *pgconn.Config // driverPostgres; carries the password
	my *mysql.Config  // driverMySQL; carries the password
}

// String renders the connection string without its password or parameters.
func (d *dsn) String() string {
	hosts := make([]string, len(d.endpoints))
	for i, e := range d.endpoints {
		hosts[i] = e.String()
	}
	s := string(d.driver) + "://"
	if d.user != "" {
		s += printable(d.user) + "@"
	}
	s += strings.Join(hosts, ",")
	if d.database != "" {
		s += "/" + printable(d.database)
	}
	return s
}

// GoString keeps %#v from printing the driver configs (and the password).
func (d *dsn) GoString() string { return "dsn(" + d.String() + ")" }

// addr renders the endpoints for messages: "db.internal:5432".
func (d *dsn) addr() string {
	hosts := make([]string, len(d.endpoints))
	for i, e := range d.endpoints {
		hosts[i] = e.String()
	}
	return strings.Join(hosts, ",")
}

// dsnError is a connection string that cannot be used, in our own words.
// Message and fix never contain any part of the string except a validated
// scheme; the caller adds where the string came from.
type dsnError struct {
	reason  Reason
	message string // e.g. "is not a valid connection string"
	fix     string
}

func (e *dsnError) Error() string { return e.message }

const formatHint = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=require " +
	"or mysql://USER:PASSWORD@HOST:PORT/DATABASE?ssl-mode=REQUIRED, with special characters in the password url-encoded"

// encodeHint says which characters to encode, with the tutorial's example,
// without looking at the real password.
const encodeHint = "url-encode the password: @ -> %40, : -> %3A, / -> %2F, ? -> %3F, # -> %23, % -> %25 " +
	"(e.g. p@ss:word/123 -> p%40ss%3Aword%2F123)"

func errInvalid(what string) *dsnError {
	return &dsnError{reason: ReasonDatabaseURLInvalid, message: what, fix: formatHint}
}

var errNotEncoded = &dsnError{
	reason:  ReasonDatabasePasswordNotEncoded,
	message: "has a password with special characters that are not url-encoded",
	fix:     encodeHint,
}

// parseDSN parses a postgres://, postgresql:// or mysql:// connection string.
func parseDSN(raw string) (*dsn, *dsnError) {
	if raw == "" {
		return nil, errInvalid("is empty")
	}
	if strings.TrimSpace(raw) != raw {
		return nil, &dsnError{
			reason:  ReasonDatabaseURLInvalid,
			message: "starts or ends with whitespace or a newline",
			fix:     "store the url without the trailing newline (kubectl create secret --from-literal, not --from-file of an echo)",
		}
	}
	if strings.IndexFunc(raw, func(r rune) bool { return r < 0x20 || r == 0x7f || r == unicode.ReplacementChar }) >= 0 {
		return nil, errInvalid("contains control characters or invalid UTF-8")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !validScheme(scheme) {
		return nil, &dsnError{
			reason:  ReasonDatabaseSchemeUnsupported,
			message: "is not a url with a scheme",
			fix:     "use a url starting with " + supportedSchemes,
		}
	}
	var driver dbDriver
	switch scheme {
	case "postgres", "postgresql":
		driver = driverPostgres
	case "mysql":
		driver = driverMySQL
	default:
		return nil, &dsnError{
			reason:  ReasonDatabaseSchemeUnsupported,
			message: "has unsupported scheme " + strconv.Quote(scheme),
			fix:     "use " + supportedSchemes,
		}
	}
	switch userinfoNeedsEncoding(rest) {
	case "password":
		return nil, errNotEncoded
	case "user":
		return nil, &dsnError{
			reason:  ReasonDatabaseURLInvalid,
			message: "has a user name with special characters that are not url-encoded",
			fix:     "url-encode the user name: @ -> %40, : -> %3A, / -> %2F, ? -> %3F, # -> %23, % -> %25",
		}
	}
	if driver == driverPostgres {
		return parsePostgres(raw, rest)
	}
	return parseMySQL(rest)
}

// validScheme accepts what RFC 3986 allows, up to 32 characters; anything
// else is not printed back.
func validScheme(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}

// userinfoNeedsEncoding reports which part of the userinfo of rest (the
// string after "scheme://"), "user" or "password", has an un-encoded @ : / ? #
// or a % that starts no valid escape; "" if neither. The userinfo ends at the
// last '@' that is not inside
// a query value ("?k=a@b"): drivers disagree on where an un-encoded password
// ends (pgx and libpq stop at the first '@', net/url at the last), and either
// way the string does not mean what its author meant.
//
// A database name containing '@' ("host/my@db") looks the same as a password
// containing '/' and is reported too; encoding it as %40 resolves both.
func userinfoNeedsEncoding(rest string) string {
	at := -1
	for i := strings.LastIndexByte(rest, '@'); i >= 0; i = strings.LastIndexByte(rest[:i], '@') {
		before := rest[:i]
		if q := strings.IndexByte(before, '?'); q >= 0 && strings.IndexByte(before[q:], '=') >= 0 &&
			strings.IndexByte(before[:q], '/') >= 0 {
			continue // '@' in a query value after a path
		}
		at = i
		break
	}
	if at < 0 {
		return ""
	}
	user, pass, hasPass := strings.Cut(rest[:at], ":")
	if hasPass && needsEncoding(pass) {
		return "password"
	}
	if needsEncoding(user) {
		return "user"
	}
	return ""
}

func needsEncoding(s string) bool {
	if strings.ContainsAny(s, "@:/?#") {
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && (i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2])) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// pgAllowedKeys are the libpq parameters handed to pgx. Everything else is
// dropped before parsing: keys that read files on the webhook's filesystem
// (sslrootcert, sslcert, sslkey, passfile, service, servicefile), run-time
// parameters other than options (they do not decide whether a connection
// works), and connect_timeout and application_name, which the probe sets.
var pgAllowedKeys = []string{
	"host", "port", "dbname", "database", "user", "password",
	"sslmode", "ssl", "sslnegotiation", "sslsni", "sslrootcert",
	"target_session_attrs", "channel_binding", "require_auth",
	"min_protocol_version", "max_protocol_version", "options",
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
			reason:  ReasonDatabaseURLInvalid,
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
			h := el
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

var mysqlSSLModes = map[string]tlsMode{
	"disabled":        tlsDisable,
	"preferred":       tlsPrefer,
	"required":        tlsRequire,
	"verify_ca":       tlsVerifyCA,
	"verify_identity": tlsVerifyFull,
}

// parseMySQL converts mysql://USER:PASSWORD@HOST:PORT/DATABASE?ssl-mode=...
// (also the golang-migrate form USER:PASSWORD@tcp(HOST:PORT)/DATABASE) into a
// go-sql-driver config. Only TLS parameters are read: others would be sent to
// the server as SET statements.
func parseMySQL(rest string) (*dsn, *dsnError) {
	if at := strings.LastIndexByte(rest, '@'); at >= 0 && strings.HasPrefix(rest[at+1:], "tcp(") {
		inner, after, ok := strings.Cut(rest[at+len("@tcp("):], ")")
		if !ok {
			return nil, errInvalid("is not a valid connection string")
		}
		rest = rest[:at+1] + inner + after
	}
	u, err := url.Parse("mysql://" + rest)
	if err != nil || u.Opaque != "" || u.Fragment != "" {
		return nil, errInvalid("is not a valid connection string")
	}
	host := u.Hostname()
	if host == "" {
		return nil, errInvalid("names no host")
	}
	port := uint16(3306)
	if ps := u.Port(); ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return nil, errInvalid("has an invalid port")
		}
		port = uint16(n)
	}
	database := strings.TrimPrefix(u.Path, "/")
	if strings.Contains(database, "/") {
		return nil, errInvalid("has an invalid database name")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, errInvalid("has a malformed query parameter")
	}

	mode, param, caIgnored := tlsPrefer, "default ssl-mode=PREFERRED", false
	if v := firstParam(q, "tls"); v != "" {
		switch strings.ToLower(v) {
		case "false":
			mode = tlsDisable
		case "preferred":
			mode = tlsPrefer
		case "skip-verify":
			mode = tlsRequire
		case "true":
			mode = tlsVerifyFull
		default: // a TLS config the application registered under a name
			mode, caIgnored = tlsRequire, true
		}
		param = "tls=" + strings.ToLower(v)
		if caIgnored {
			param = "tls=<custom>"
		}
	}
	if v := firstParam(q, "ssl-mode", "sslmode", "ssl_mode"); v != "" {
		m, ok := mysqlSSLModes[strings.ToLower(v)]
		if !ok {
			return nil, &dsnError{
				reason:  ReasonDatabaseURLInvalid,
				message: "has an invalid ssl-mode",
				fix:     "use ssl-mode=DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY",
			}
		}
		mode, param, caIgnored = m, "ssl-mode="+strings.ToUpper(v), false
	}
	if firstParam(q, "ssl-ca", "sslca", "ssl_ca", "sslrootcert") != "" && mode >= tlsRequire {
		mode, caIgnored = tlsRequire, true
	}

	pw, _ := u.User.Password()
	cfg := mysql.NewConfig()
	cfg.User = u.User.Username()
	cfg.Passwd = pw
	cfg.Net = "tcp"
	cfg.Addr = net.JoinHostPort(host, strconv.Itoa(int(port)))
	cfg.DBName = database
	cfg.Logger = &mysql.NopLogger{}
	cfg.ConnectionAttributes = "program_name:cutover-guard"
	cfg.TLS = tlsConfigFor(mode, host)
	cfg.AllowFallbackToPlaintext = mode == tlsPrefer

	return &dsn{
		driver:        driverMySQL,
		endpoints:     []endpoint{{host: host, port: port}},
		user:          cfg.User,
		database:      database,
		tls:           mode,
		tlsParam:      param,
		caFileIgnored: caIgnored,
		my:            cfg,
	}, nil
}

func firstParam(q url.Values, keys ...string) string {
	for k, vs := range q {
		for _, want := range keys {
			if strings.EqualFold(k, want) && len(vs) > 0 {
				return vs[len(vs)-1]
			}
		}
	}
	return ""
}

// tlsConfigFor builds the client TLS config for a MySQL tlsMode. Verification
// uses the system roots: a CA file named in the string is in the app's pod.
func tlsConfigFor(mode tlsMode, host string) *tls.Config {
	switch mode {
	case tlsDisable:
		return nil
	case tlsPrefer, tlsRequire:
		return &tls.Config{InsecureSkipVerify: true, ServerName: host} //nolint:gosec // what the string asks for
	case tlsVerifyCA:
		c := &tls.Config{InsecureSkipVerify: true, ServerName: host} //nolint:gosec // chain verified below
		c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no server certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, b := range raw {
				cert, err := x509.ParseCertificate(b)
				if err != nil {
					return err
				}
				certs[i] = cert
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Intermediates: inter})
			return err
		}
		return c
	default:
		return &tls.Config{ServerName: host}
	}
}

// printable returns s if it is a plain name (host, user, database) and a
// quoted, shortened form otherwise, so that a message stays one line.
func printable(s string) string {
	plain := s != "" && len(s) <= 253
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:[]%", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}
