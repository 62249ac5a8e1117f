package probe

import (
	"net"
	"strconv"
	"strings"
	"unicode"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file and dsn_postgres.go and dsn_mysql.go turn a connection string
// into a driver configuration. They never pass driver error text on (parsers
// quote their input, and the input holds a password): every failure is a
// dsnError in our own words that names at most the scheme.

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
	return net.JoinHostPort(Printable(e.host), strconv.Itoa(int(e.port)))
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
	// ssl-ca, a custom tls config): that file lives in the application's pod,
	// so the probe checks that TLS works but cannot verify the chain, and a
	// Result that passed says so (Result.ChainNotVerified).
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
		s += Printable(d.user) + "@"
	}
	s += strings.Join(hosts, ",")
	if d.database != "" {
		s += "/" + Printable(d.database)
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
	return &dsnError{reason: ReasonURLInvalid, message: what, fix: formatHint}
}

var errNotEncoded = &dsnError{
	reason:  ReasonPasswordNotEncoded,
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
			reason:  ReasonURLInvalid,
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
			reason:  ReasonSchemeUnsupported,
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
			reason:  ReasonSchemeUnsupported,
			message: "has unsupported scheme " + strconv.Quote(scheme),
			fix:     "use " + supportedSchemes,
		}
	}
	switch userinfoNeedsEncoding(rest) {
	case "password":
		return nil, errNotEncoded
	case "user":
		return nil, &dsnError{
			reason:  ReasonURLInvalid,
			message: "has a user name with special characters that are not url-encoded",
			fix:     "url-encode the user name: @ -> %40, : -> %3A, / -> %2F, ? -> %3F, # -> %23, % -> %25",
		}
	}
	var d *dsn
	var err *dsnError
	if driver == driverPostgres {
		d, err = parsePostgres(raw, rest)
	} else {
		d, err = parseMySQL(rest)
	}
	if err != nil {
		return nil, err
	}
	if part := controlCharsIn(d); part != "" {
		return nil, errInvalid("has a " + part + " with control characters once %-decoded")
	}
	return d, nil
}

// controlCharsIn names the first part of d (user, password, host, database)
// that holds a control character after %-decoding ("%0A", "%00"): such a
// value would end a log line or a protocol field early. "" if none.
func controlCharsIn(d *dsn) string {
	hasControl := func(s string) bool {
		return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || unicode.IsControl(r) }) >= 0
	}
	password := ""
	switch {
	case d.pg != nil:
		password = d.pg.Password
	case d.my != nil:
		password = d.my.Passwd
	}
	switch {
	case hasControl(d.user):
		return "user name"
	case hasControl(password):
		return "password"
	case hasControl(d.database):
		return "database name"
	}
	for _, e := range d.endpoints {
		if hasControl(e.host) {
			return "host"
		}
	}
	return ""
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

// Printable returns s if it is a plain name (a host, user, database or
// environment variable name) and a quoted, shortened form otherwise, so that
// a message that names it stays one line and cannot be mistaken for ours.
func Printable(s string) string {
	plain := s != "" && len(s) <= 253
	for _, r := range s {
		if !nameRune(r) {
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

// nameRune reports whether r may appear in a name printed as it is.
func nameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._:[]%", r)
}
