package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

func (p *Prober) connectPostgres(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr, q *SchemaQuery) (string, *SchemaState, error) {
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
	if q != nil {
		// A schema query's session is read-only and its statement
		// bounded by the server too, both set at login by the guard.
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
		cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(statementTimeout(ctx).Milliseconds(), 10)
	}

	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return stageConnect, nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if q != nil {
		s, err := pgSchema(ctx, conn, q)
		if err != nil {
			return stageSchema, nil, err
		}
		return "", s, nil
	}
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		return stageQuery, nil, err
	}
	return "", nil, nil
}

// pgSchema runs q's one statement on conn, with its parameters bound (never
// written into the statement).
func pgSchema(ctx context.Context, conn *pgconn.PgConn, q *SchemaQuery) (*SchemaState, error) {
	sql, args := schemaSQL(q, true)
	params := make([][]byte, len(args))
	for i, a := range args {
		params[i] = []byte(a)
	}
	res := conn.ExecParams(ctx, sql, params, nil, nil, nil).Read()
	if res.Err != nil {
		var e *pgconn.PgError
		// undefined_table, invalid_schema_name, undefined_column: the
		// tool's table is not there (or is not the tool's).
		if errors.As(res.Err, &e) && (e.Code == "42P01" || e.Code == "3F000" || e.Code == "42703") {
			return &SchemaState{Tool: q.Tool, Missing: true}, nil
		}
		return nil, res.Err
	}
	if len(res.Rows) != 1 {
		return nil, fmt.Errorf("schema query returned %d rows", len(res.Rows))
	}
	row := make([]*string, len(res.Rows[0]))
	for i, v := range res.Rows[0] {
		if v != nil {
			s := string(v)
			row[i] = &s
		}
	}
	return schemaState(q, row)
}

// statementTimeout is three quarters of what is left of ctx's deadline, at
// least 1 ms and at most DefaultTimeout: the server ends the schema
// statement, and says so, before the probe gives up on the connection.
func statementTimeout(ctx context.Context) time.Duration {
	d := DefaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)*3/4)
	}
	return max(d, time.Millisecond)
}

func pgServerError(d *dsn, e *pgconn.PgError, stage string) Result {
	at := "database at " + d.addr()
	user, db := Printable(d.user), Printable(d.database)
	if stage == stageSchema && e.Code == "57014" { // query_canceled: the statement timeout
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s did not answer the schema query within its statement timeout", at),
			plain("check the database's load and the migration table's size"))
	}
	if stage == stageQuery || stage == stageSchema {
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s accepted the login but %s failed (SQLSTATE %s)", at, statementOf(stage), sqlState(e.Code)),
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
