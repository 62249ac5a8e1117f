package probe

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-sql-driver/mysql"
)

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
				reason:  ReasonURLInvalid,
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
