package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func (p *Prober) connectPostgres(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr) (string, error) {
	cfg := d.pg
	cfg.ConnectTimeout = 0
	cfg.DialFunc = t.dial
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) {
		ips, ok := addrs[host]
		if !ok {
			return nil, errors.New("host was not checked")
		}
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.String()
		}
		return out, nil
	}
	cfg.AfterNetConnect = func(_ context.Context, _ *pgconn.Config, c net.Conn) (net.Conn, error) {
		t.mu.Lock()
		t.netReady = true
		if tc, ok := c.(*tls.Conn); ok {
			t.tlsConn = tc
		}
		t.mu.Unlock()
		return c, nil
	}
	// pgx allows a message body of up to 1 GiB and allocates it before
	// reading: a server that announces one would have the guard hold it.
	cfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		f := pgproto3.NewFrontend(r, w)
		f.SetMaxBodyLen(maxMessageLen)
		return f
	}
	cfg.OnNotice = nil
	cfg.OnNotification = nil
	// The only run-time parameter sent: none of the string's reach here.
	cfg.RuntimeParams = map[string]string{"application_name": "cutover-guard"}

	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return stageConnect, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		return stageQuery, err
	}
	return "", nil
}

func pgServerError(d *dsn, e *pgconn.PgError, stage string) Result {
	at := "database at " + d.addr()
	user, db := Printable(d.user), Printable(d.database)
	if stage == stageQuery {
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s accepted the login but SELECT 1 failed (SQLSTATE %s)", at, sqlState(e.Code)),
			plain("check the database's health"))
	}
	switch e.Code {
	case "28P01":
		return deny(ReasonAuthFailed,
			fmt.Sprintf("%s rejected the password for user %s", at, user),
			inSource("check the password in ", ""))
	case "28000":
		if d.tls == tlsDisable && strings.Contains(e.Message, "no encryption") {
			return deny(ReasonTLSRequired,
				fmt.Sprintf("%s has no rule for unencrypted connections of user %s (sslmode=disable)", at, user),
				inSource("set sslmode=require in ", ""))
		}
		return deny(ReasonAuthFailed,
			fmt.Sprintf("%s does not let user %s connect to database %s (pg_hba.conf)", at, user, db),
			inSource("check the user and database in ", " and the database's access rules"))
	case "3D000":
		return deny(ReasonNotFound,
			fmt.Sprintf("database %s does not exist at %s", db, d.addr()),
			inSource("create it, or fix the database name in ", ""))
	case "42501":
		return deny(ReasonAuthFailed,
			fmt.Sprintf("%s does not let user %s connect to database %s (no CONNECT privilege)", at, user, db),
			inSource("grant CONNECT, or fix the user in ", ""))
	case "53300":
		return deny(ReasonProbeFailed,
			fmt.Sprintf("%s has no free connection slots", at),
			plain("raise the database's connection limit or use a connection pool"))
	case "57P03":
		return deny(ReasonProbeFailed,
			fmt.Sprintf("%s is starting up, shutting down or in recovery", at),
			plain("wait until the database accepts connections"))
	case "57P01", "57P02":
		// admin_shutdown, crash_shutdown: the server ended the session.
		return deny(ReasonConnectionClosed,
			fmt.Sprintf("%s ended the login because it is shutting down or restarting (SQLSTATE %s)", at, e.Code),
			plain("retry once the database is up"))
	}
	return deny(ReasonProbeFailed,
		fmt.Sprintf("%s refused the connection (SQLSTATE %s)", at, sqlState(e.Code)),
		inSource("check the connection string in ", " and the database's logs"))
}

func sqlState(code string) string {
	if len(code) != 5 {
		return "?"
	}
	for _, r := range code {
		if (r < '0' || r > '9') && (r < 'A' || r > 'Z') {
			return "?"
		}
	}
	return code
}
