package probe

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/cutover-guard/cutover-guard/checks/probe/probetest"

	"github.com/google/go-cmp/cmp"
)

// parsed is what a test compares of a parse result.
type parsed struct {
	Driver    dbDriver
	Endpoints string
	User      string
	Database  string
	Password  string
	TLS       tlsMode
	TLSParam  string
	CAIgnored bool
	Rendered  string
	// Reason and Message are set when parsing fails.
	Reason  Reason
	Message string
}

func summarize(d *dsn, err *dsnError) parsed {
	if err != nil {
		return parsed{Reason: err.reason, Message: err.message}
	}
	p := parsed{
		Driver: d.driver, Endpoints: d.addr(), User: d.user, Database: d.database,
		TLS: d.tls, TLSParam: d.tlsParam, CAIgnored: d.caFileIgnored, Rendered: d.String(),
	}
	if d.pg != nil {
		p.Password = d.pg.Password
	} else {
		p.Password = d.my.Passwd
	}
	return p
}

func TestParseDSN(t *testing.T) {
	notEncoded := parsed{Reason: ReasonPasswordNotEncoded, Message: "has a password with special characters that are not url-encoded"}
	tests := map[string]struct {
		dsn  string
		want parsed
	}{
		"the tutorial's postgres url with an encoded password parses": {
			dsn: "postgresql://doadmin:p%40ss%3Aword%2F123@private-db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require",
			want: parsed{Driver: driverPostgres, Endpoints: "private-db-postgresql-nyc1-12345.db.ondigitalocean.com:25060",
				User: "doadmin", Database: "defaultdb", Password: "p@ss:word/123", TLS: tlsRequire, TLSParam: "sslmode=require",
				Rendered: "postgres://doadmin@private-db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb"},
		},
		"postgres:// without sslmode prefers TLS and defaults the port": {
			dsn: "postgres://app:secret@db.internal/app",
			want: parsed{Driver: driverPostgres, Endpoints: "db.internal:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsPrefer, TLSParam: "default sslmode=prefer", Rendered: "postgres://app@db.internal:5432/app"},
		},
		"a postgres url without a database uses the user's name": {
			dsn: "postgres://app:secret@10.0.0.5:5432",
			want: parsed{Driver: driverPostgres, Endpoints: "10.0.0.5:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsPrefer, TLSParam: "default sslmode=prefer", Rendered: "postgres://app@10.0.0.5:5432/app"},
		},
		"several postgres hosts are all kept": {
			dsn: "postgres://app:secret@10.0.0.5:5432,10.0.0.6:5433/app?sslmode=disable&target_session_attrs=read-write",
			want: parsed{Driver: driverPostgres, Endpoints: "10.0.0.5:5432,10.0.0.6:5433", User: "app", Database: "app", Password: "secret",
				TLS: tlsDisable, TLSParam: "sslmode=disable", Rendered: "postgres://app@10.0.0.5:5432,10.0.0.6:5433/app"},
		},
		"an IPv6 postgres host": {
			dsn: "postgres://app:secret@[fd00::5]:5432/app?sslmode=verify-full",
			want: parsed{Driver: driverPostgres, Endpoints: "[fd00::5]:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsVerifyFull, TLSParam: "sslmode=verify-full", Rendered: "postgres://app@[fd00::5]:5432/app"},
		},
		"ssl=true means sslmode=require": {
			dsn: "postgres://app:secret@db:5432/app?ssl=true",
			want: parsed{Driver: driverPostgres, Endpoints: "db:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsRequire, TLSParam: "sslmode=require", Rendered: "postgres://app@db:5432/app"},
		},
		"a CA file in the app's pod makes verify-full a TLS-only check": {
			dsn: "postgres://app:secret@db:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/do-ca.crt",
			want: parsed{Driver: driverPostgres, Endpoints: "db:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsRequire, TLSParam: "sslmode=verify-full", CAIgnored: true, Rendered: "postgres://app@db:5432/app"},
		},
		"sslrootcert=system verifies against the system roots": {
			dsn: "postgres://app:secret@db:5432/app?sslrootcert=system",
			want: parsed{Driver: driverPostgres, Endpoints: "db:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsVerifyFull, TLSParam: "sslrootcert=system", Rendered: "postgres://app@db:5432/app"},
		},
		"parameters that read local files are dropped, not followed": {
			dsn: "postgres://app:secret@db:5432/app?service=x&servicefile=/nonexistent&passfile=/nonexistent&sslcert=/nonexistent&sslkey=/nonexistent&application_name=x&connect_timeout=99",
			want: parsed{Driver: driverPostgres, Endpoints: "db:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsPrefer, TLSParam: "default sslmode=prefer", Rendered: "postgres://app@db:5432/app"},
		},
		"a query value with a raw '=' is malformed": {
			dsn:  "postgres://app:secret@db:5432/app?options=-c%20search_path=a@b",
			want: parsed{Reason: ReasonURLInvalid, Message: "has a malformed query parameter"},
		},
		"an '@' inside a query value is not taken for the userinfo": {
			dsn: "postgres://app:secret@db:5432/app?options=x@y",
			want: parsed{Driver: driverPostgres, Endpoints: "db:5432", User: "app", Database: "app", Password: "secret",
				TLS: tlsPrefer, TLSParam: "default sslmode=prefer", Rendered: "postgres://app@db:5432/app"},
		},
		"the tutorial's mysql url": {
			dsn: "mysql://doadmin:s3cret@private-db-mysql-nyc1-1.db.ondigitalocean.com:25060/defaultdb?ssl-mode=REQUIRED",
			want: parsed{Driver: driverMySQL, Endpoints: "private-db-mysql-nyc1-1.db.ondigitalocean.com:25060", User: "doadmin",
				Database: "defaultdb", Password: "s3cret", TLS: tlsRequire, TLSParam: "ssl-mode=REQUIRED",
				Rendered: "mysql://doadmin@private-db-mysql-nyc1-1.db.ondigitalocean.com:25060/defaultdb"},
		},
		"mysql without parameters prefers TLS and defaults the port": {
			dsn: "mysql://app:p%40ss@db/app",
			want: parsed{Driver: driverMySQL, Endpoints: "db:3306", User: "app", Database: "app", Password: "p@ss",
				TLS: tlsPrefer, TLSParam: "default ssl-mode=PREFERRED", Rendered: "mysql://app@db:3306/app"},
		},
		"mysql tls=true verifies the certificate": {
			dsn: "mysql://app:pw@db:3306/app?tls=true",
			want: parsed{Driver: driverMySQL, Endpoints: "db:3306", User: "app", Database: "app", Password: "pw",
				TLS: tlsVerifyFull, TLSParam: "tls=true", Rendered: "mysql://app@db:3306/app"},
		},
		"mysql tls naming a registered config is a TLS-only check": {
			dsn: "mysql://app:pw@db:3306/app?tls=do-ca",
			want: parsed{Driver: driverMySQL, Endpoints: "db:3306", User: "app", Database: "app", Password: "pw",
				TLS: tlsRequire, TLSParam: "tls=<custom>", CAIgnored: true, Rendered: "mysql://app@db:3306/app"},
		},
		"mysql ssl-mode wins over tls and is case-insensitive": {
			dsn: "mysql://app:pw@db:3306/app?tls=false&ssl-mode=verify_identity",
			want: parsed{Driver: driverMySQL, Endpoints: "db:3306", User: "app", Database: "app", Password: "pw",
				TLS: tlsVerifyFull, TLSParam: "ssl-mode=VERIFY_IDENTITY", Rendered: "mysql://app@db:3306/app"},
		},
		"the golang-migrate mysql form": {
			dsn: "mysql://app:pw@tcp(10.1.2.3:3307)/app",
			want: parsed{Driver: driverMySQL, Endpoints: "10.1.2.3:3307", User: "app", Database: "app", Password: "pw",
				TLS: tlsPrefer, TLSParam: "default ssl-mode=PREFERRED", Rendered: "mysql://app@10.1.2.3:3307/app"},
		},
		"an un-encoded '@' in the password":          {dsn: "postgresql://app:p@ss@db:5432/app", want: notEncoded},
		"an un-encoded ':' in the password":          {dsn: "postgresql://app:p:ss@db:5432/app", want: notEncoded},
		"an un-encoded '/' in the password":          {dsn: "postgresql://app:p/ss@db:5432/app", want: notEncoded},
		"an un-encoded '?' in the password":          {dsn: "mysql://app:p?ss@db:3306/app", want: notEncoded},
		"an un-encoded '#' in the password":          {dsn: "mysql://app:p#ss@db:3306/app", want: notEncoded},
		"the tutorial's example password un-encoded": {dsn: "postgresql://app:p@ss:word/123@db:25060/app?sslmode=require", want: notEncoded},
		"a '%' that starts no escape":                {dsn: "postgresql://app:100%sure@db:5432/app", want: notEncoded},
		"an un-encoded '@' in the user name": {
			dsn:  "postgresql://app@corp:pw@db:5432/app",
			want: parsed{Reason: ReasonURLInvalid, Message: "has a user name with special characters that are not url-encoded"},
		},
		"an encoded '@' in the user name": {
			dsn: "postgresql://app%40corp:pw@db:5432/app",
			want: parsed{Driver: driverPostgres, Endpoints: "db:5432", User: "app@corp", Database: "app", Password: "pw",
				TLS: tlsPrefer, TLSParam: "default sslmode=prefer", Rendered: `postgres://"app@corp"@db:5432/app`},
		},
		"an unknown scheme lists the supported ones": {
			dsn:  "redis://:secret@cache:6379/0",
			want: parsed{Reason: ReasonSchemeUnsupported, Message: `has unsupported scheme "redis"`},
		},
		"an upper-case scheme is not one pgx accepts": {
			dsn:  "POSTGRES://app:secret@db/app",
			want: parsed{Reason: ReasonSchemeUnsupported, Message: `has unsupported scheme "POSTGRES"`},
		},
		"a keyword/value string is not a url": {
			dsn:  "host=db user=app password=secret dbname=app",
			want: parsed{Reason: ReasonSchemeUnsupported, Message: "is not a url with a scheme"},
		},
		"a go-sql-driver DSN is not a url": {
			dsn:  "app:secret@tcp(db:3306)/app",
			want: parsed{Reason: ReasonSchemeUnsupported, Message: "is not a url with a scheme"},
		},
		"a trailing newline from --from-file": {
			dsn:  "postgres://app:secret@db/app\n",
			want: parsed{Reason: ReasonURLInvalid, Message: "starts or ends with whitespace or a newline"},
		},
		"an empty value": {
			dsn:  "",
			want: parsed{Reason: ReasonURLInvalid, Message: "is empty"},
		},
		"no host would mean the webhook's local socket": {
			dsn:  "postgres://app:secret@/app",
			want: parsed{Reason: ReasonURLInvalid, Message: "names no host"},
		},
		"a unix socket host cannot be checked": {
			dsn:  "postgres://app:secret@db/app?host=/var/run/postgresql",
			want: parsed{Reason: ReasonURLInvalid, Message: "names a unix socket, which cannot be checked"},
		},
		"an invalid sslmode": {
			dsn:  "postgres://app:secret@db/app?sslmode=always",
			want: parsed{Reason: ReasonURLInvalid, Message: "has an invalid sslmode"},
		},
		"an invalid postgres port": {
			dsn:  "postgres://app:secret@db:99999/app",
			want: parsed{Reason: ReasonURLInvalid, Message: "is not a valid connection string"},
		},
		"an invalid mysql port": {
			dsn:  "mysql://app:secret@db:0/app",
			want: parsed{Reason: ReasonURLInvalid, Message: "has an invalid port"},
		},
		"an invalid mysql ssl-mode": {
			dsn:  "mysql://app:secret@db/app?ssl-mode=ALWAYS",
			want: parsed{Reason: ReasonURLInvalid, Message: "has an invalid ssl-mode"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := summarize(parseDSN(tc.dsn))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseDSN(%q) mismatch (-want +got):\n%s", tc.dsn, diff)
			}
		})
	}
}

// TestParseDSNIgnoresWebhookEnvironment: a password, user or host missing
// from the string must not be filled from the webhook's own environment.
func TestParseDSNIgnoresWebhookEnvironment(t *testing.T) {
	t.Setenv("PGPASSWORD", "webhook-own-password")
	t.Setenv("PGUSER", "webhook-user")
	t.Setenv("PGHOST", "webhook-host")
	got := summarize(parseDSN("postgres://db.internal:5432/app"))
	want := parsed{Driver: driverPostgres, Endpoints: "db.internal:5432", Database: "app",
		TLS: tlsPrefer, TLSParam: "default sslmode=prefer", Rendered: "postgres://db.internal:5432/app"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mismatch (-want +got):\n%s", diff)
	}
	got = summarize(parseDSN("postgres://app:pw@/app"))
	if got.Reason != ReasonURLInvalid {
		t.Errorf("a url without host parsed as %+v (PGHOST must not fill it)", got)
	}
}

func TestDSNFormattingHidesPassword(t *testing.T) {
	d, err := parseDSN("postgres://app:Hunter2-secret@db:5432/app")
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, d); strings.Contains(s, "Hunter2") {
			t.Errorf("%s of a dsn shows the password: %s", verb, s)
		}
	}
}

// passwordCandidates returns the spans of raw a reader could take for the
// password: the text after the first ':' of the userinfo, for both the
// first-'@' and the last-'@' reading, and a password query parameter.
func passwordCandidates(raw string) []string {
	_, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil
	}
	var out []string
	for _, at := range []int{strings.IndexByte(rest, '@'), strings.LastIndexByte(rest, '@')} {
		if at < 0 {
			continue
		}
		// A user name holds no '/', '?' or '#' (parseDSN refuses one that
		// does, with a message that quotes nothing): a cut that finds one
		// in it spans the host, path or query, not the userinfo.
		if user, pw, ok := strings.Cut(rest[:at], ":"); ok && pw != "" && !strings.ContainsAny(user, "/?#") {
			out = append(out, pw)
		}
	}
	// A password parameter is one of the query's (after the first '?'):
	// "password=" elsewhere is part of a host or path, printed on purpose.
	if _, query, ok := strings.Cut(rest, "?"); ok {
		for _, kv := range strings.Split(query, "&") {
			if pw, ok := strings.CutPrefix(kv, "password="); ok && pw != "" {
				out = append(out, pw)
			}
		}
	}
	return out
}

// rotate changes every letter and digit of s, keeping the structure.
func rotate(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return 'a' + (r-'a'+7)%26
		case r >= 'A' && r <= 'Z':
			return 'A' + (r-'A'+7)%26
		case r >= '0' && r <= '9':
			return '0' + (r-'0'+3)%10
		}
		return r
	}, s)
}

func FuzzParseDSN(f *testing.F) {
	for _, s := range []string{
		"postgresql://doadmin:p%40ss%3Aword%2F123@private-db-postgresql-nyc1-12345.db.ondigitalocean.com:25060/defaultdb?sslmode=require",
		"postgresql://app:p@ss:word/123@db:25060/app?sslmode=require",
		"postgres://app:secret@10.0.0.5:5432,10.0.0.6:5433/app?sslmode=disable",
		"postgres://app:secret@[fd00::5]:5432/app?sslmode=verify-full&sslrootcert=/x",
		"postgres://app:secret@db/app?host=/tmp&password=other",
		"postgres://:secret@db/app",
		"postgres://app@db/app?password=qwerty123",
		"mysql://doadmin:s3cret@private-db-mysql-nyc1-1.db.ondigitalocean.com:25060/defaultdb?ssl-mode=REQUIRED",
		"mysql://app:pw@tcp(10.1.2.3:3307)/app?tls=custom",
		"mysql://app:p#ss@db:3306/app",
		"mysql://app:p?ss=1@db:3306/app",
		"redis://:secret@cache:6379/0",
		"host=db user=app password=secret",
		"postgres://app:100%sure@db/app",
		"postgres://app:secret@db:99999/app",
		"postgres://app:se cret@db/app",
		"postgres://db-postgresql-nyc1-1.db.ondigitalocean.com/x",
		"postgres://app%0A:p%01w@db:5432/a%0D?options=-c%20work_mem%3D4GB",
		"mysql://app:p%C2%85w@db:3306/a%09pp",
	} {
		f.Add(s)
	}
	// No packet leaves: every name resolves to a non-private address, and a
	// private IP literal meets a dialer that refuses.
	p := NewProber(ProberOptions{
		PrivateCIDRs: mustPrefixes("10.0.0.0/8", "fd00::/8"),
		Resolver:     probetest.FixedResolver("192.0.2.1"),
		Dial:         probetest.RefuseDial,
	})
	f.Fuzz(func(t *testing.T, raw string) {
		// render returns everything we could show for raw, and the parts
		// that are printed on purpose.
		render := func(raw string) (string, []string) {
			d, perr := parseDSN(raw)
			if perr != nil {
				return perr.message + "\n" + perr.fix, []string{strings.SplitN(raw, "://", 2)[0]}
			}
			printed := []string{d.user, d.database}
			for _, e := range d.endpoints {
				printed = append(printed, e.host)
			}
			res, err := p.Probe(t.Context(), raw)
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			return fmt.Sprintf("%v|%+v|%#v|%s|%s|%s", d, d, d, d.addr(), res.Message.Render("SOURCE"), res.Fix.Render("SOURCE")), printed
		}
		text, printed := render(raw)
		for _, cand := range passwordCandidates(raw) {
			// A secret shown because of the password disappears when the
			// password changes; one that is part of our wording does not.
			// Only after the scheme: a candidate can overlap it
			// ("postgres://Ji..." holds "s://Ji"), and a rotated scheme
			// would not parse at all.
			scheme, rest, _ := strings.Cut(raw, "://")
			other, _ := render(scheme + "://" + strings.ReplaceAll(rest, cand, rotate(cand)))
			secrets := []string{cand}
			if dec, err := url.PathUnescape(cand); err == nil {
				secrets = append(secrets, dec)
			}
			for _, s := range secrets {
				if len(s) < 4 || !strings.Contains(text, s) || strings.Contains(other, s) {
					continue
				}
				shown := false
				for _, p := range printed {
					shown = shown || strings.Contains(p, s) || strings.Contains(Printable(p), s)
				}
				if !shown {
					t.Fatalf("%q: output shows the password %q:\n%s", raw, s, text)
				}
			}
		}
	})
}
