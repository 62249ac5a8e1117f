package probe

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/go-sql-driver/mysql"
)

func (p *Prober) connectMySQL(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr, q *SchemaQuery) (string, *SchemaState, error) {
	cfg := d.my.Clone()
	e := d.endpoints[0]
	t.mu.Lock()
	t.mysqlFraming = true
	t.mu.Unlock()
	// With TLS, the driver's handshake is answered in process and the
	// probe's own reaches the server (see mysqlSplice).
	serverTLS := cfg.TLS
	if serverTLS != nil {
		_, client := spliceTLS()
		cfg.TLS = client.Clone()
	}
	var mu sync.Mutex
	var splices []*mysqlSplice
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range splices {
			_ = s.Close()
		}
	}()
	cfg.DialFunc = func(dctx context.Context, _, _ string) (net.Conn, error) {
		var errs []error
		for _, ip := range addrs[e.host] {
			c, err := t.dial(dctx, "tcp", netip.AddrPortFrom(ip, e.port).String())
			if err == nil && serverTLS != nil {
				s := spliceMySQL(ctx, c.(*trackedConn), serverTLS)
				mu.Lock()
				splices = append(splices, s)
				mu.Unlock()
				return s, nil
			}
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return nil, errors.Join(errs...)
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return stageConnect, nil, err
	}
	c, err := connector.Connect(ctx)
	if err != nil {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range splices {
			if herr := s.handshakeErr(); herr != nil {
				return stageConnect, nil, herr
			}
		}
		return stageConnect, nil, err
	}
	defer func() { _ = c.Close() }()
	if q != nil {
		s, err := mysqlSchema(ctx, c, q)
		if err != nil {
			return stageSchema, nil, err
		}
		return "", s, nil
	}
	qc, ok := c.(driver.QueryerContext)
	if !ok {
		return stageQuery, nil, errors.New("driver cannot query")
	}
	rows, err := qc.QueryContext(ctx, "SELECT 1", nil)
	if err != nil {
		return stageQuery, nil, err
	}
	defer func() { _ = rows.Close() }()
	if err := rows.Next(make([]driver.Value, len(rows.Columns()))); err != nil {
		return stageQuery, nil, err
	}
	return "", nil, nil
}

// mysqlSchema runs q's one statement on c in a read-only transaction, with
// its parameters bound by a prepared statement (never written into it).
// MySQL ends the statement at its MAX_EXECUTION_TIME hint; MariaDB, which
// reads the hint as a comment, at the session's max_statement_time (a
// variable MySQL does not know: its refusal is ignored); either way the
// probe's deadline closes the connection.
func mysqlSchema(ctx context.Context, c driver.Conn, q *SchemaQuery) (*SchemaState, error) {
	ec, ok := c.(driver.ExecerContext)
	if !ok {
		return nil, errors.New("driver cannot execute")
	}
	ms := statementTimeout(ctx).Milliseconds()
	if _, err := ec.ExecContext(ctx, fmt.Sprintf("SET SESSION max_statement_time = %d.%03d", ms/1000, ms%1000), nil); err != nil {
		var e *mysql.MySQLError
		if !errors.As(err, &e) || e.Number != 1193 { // 1193: unknown variable (MySQL)
			return nil, err
		}
	}
	if _, err := ec.ExecContext(ctx, "START TRANSACTION READ ONLY", nil); err != nil {
		return nil, err
	}
	pc, ok := c.(driver.ConnPrepareContext)
	if !ok {
		return nil, errors.New("driver cannot prepare")
	}
	sql, args := schemaSQL(q, false)
	sql = fmt.Sprintf("SELECT /*+ MAX_EXECUTION_TIME(%d) */ %s", ms, strings.TrimPrefix(sql, "SELECT "))
	st, err := pc.PrepareContext(ctx, sql)
	if err != nil {
		if missingMySQLTable(err) {
			return &SchemaState{Tool: q.Tool, Missing: true}, nil
		}
		return nil, err
	}
	defer func() { _ = st.Close() }()
	named := make([]driver.NamedValue, len(args))
	for i, a := range args {
		named[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, named)
	if err != nil {
		if missingMySQLTable(err) {
			return &SchemaState{Tool: q.Tool, Missing: true}, nil
		}
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	vals := make([]driver.Value, len(rows.Columns()))
	if err := rows.Next(vals); err != nil {
		return nil, err
	}
	row := make([]*string, len(vals))
	for i, v := range vals {
		var s string
		switch v := v.(type) {
		case nil:
			continue
		case []byte:
			s = string(v)
		case string:
			s = v
		case int64:
			s = strconv.FormatInt(v, 10)
		case uint64:
			s = strconv.FormatUint(v, 10)
		default:
			s = fmt.Sprint(v)
		}
		row[i] = &s
	}
	return schemaState(q, row)
}

// missingMySQLTable reports a table (1146) or column (1054) that does not
// exist: the tool's table is not there, or is not the tool's.
func missingMySQLTable(err error) bool {
	var e *mysql.MySQLError
	return errors.As(err, &e) && (e.Number == 1146 || e.Number == 1054)
}

// reachableOnly checks a connection string without a user: it can only show

func mysqlServerError(d *dsn, e *mysql.MySQLError, stage string) Result {
	at := "database at " + d.addr()
	user, db := Printable(d.user), Printable(d.database)
	if stage == stageSchema && (e.Number == 3024 || e.Number == 1969) { // max_execution_time / max_statement_time exceeded
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s did not answer the schema query within its statement timeout", at),
			plain("check the database's load and the migration table's size"))
	}
	if stage == stageQuery || stage == stageSchema {
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s accepted the login but %s failed (mysql error %d)", at, statementOf(stage), e.Number),
			plain("check the database's health"))
	}
	switch e.Number {
	case 1045:
		return deny(ReasonAuthFailed,
			fmt.Sprintf("%s rejected the password for user %s", at, user),
			inSource("check the password in ", ""))
	case 1044:
		return deny(ReasonAuthFailed,
			fmt.Sprintf("%s does not let user %s use database %s (or it does not exist)", at, user, db),
			inSource("check the database name in ", ", or grant the user access to it"))
	case 1049:
		return deny(ReasonNotFound,
			fmt.Sprintf("database %s does not exist at %s", db, d.addr()),
			inSource("create it, or fix the database name in ", ""))
	case 1130:
		return deny(ReasonAuthFailed,
			fmt.Sprintf("%s does not accept connections from this cluster", at),
			plain("allow the cluster's addresses for user "+user))
	case 3159:
		return deny(ReasonTLSRequired,
			fmt.Sprintf("%s requires TLS but the connection string disables it (%s)", at, d.tlsParam),
			inSource("set ssl-mode=REQUIRED in ", ""))
	case 1040:
		return deny(ReasonProbeFailed,
			fmt.Sprintf("%s has no free connection slots", at),
			plain("raise max_connections or use a connection pool"))
	case 1053:
		return deny(ReasonConnectionClosed,
			fmt.Sprintf("%s ended the login because it is shutting down (mysql error 1053)", at),
			plain("retry once the database is up"))
	}
	return deny(ReasonProbeFailed,
		fmt.Sprintf("%s refused the connection (mysql error %d)", at, e.Number),
		inSource("check the connection string in ", " and the database's logs"))
}
