package probe

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/go-sql-driver/mysql"
)

func (p *Prober) connectMySQL(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr) (string, error) {
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
		return stageConnect, err
	}
	c, err := connector.Connect(ctx)
	if err != nil {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range splices {
			if herr := s.handshakeErr(); herr != nil {
				return stageConnect, herr
			}
		}
		return stageConnect, err
	}
	defer func() { _ = c.Close() }()
	q, ok := c.(driver.QueryerContext)
	if !ok {
		return stageQuery, errors.New("driver cannot query")
	}
	rows, err := q.QueryContext(ctx, "SELECT 1", nil)
	if err != nil {
		return stageQuery, err
	}
	defer func() { _ = rows.Close() }()
	if err := rows.Next(make([]driver.Value, len(rows.Columns()))); err != nil {
		return stageQuery, err
	}
	return "", nil
}

// reachableOnly checks a connection string without a user: it can only show

func mysqlServerError(d *dsn, e *mysql.MySQLError, stage string) Result {
	at := "database at " + d.addr()
	user, db := Printable(d.user), Printable(d.database)
	if stage == stageQuery {
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s accepted the login but SELECT 1 failed (mysql error %d)", at, e.Number),
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
