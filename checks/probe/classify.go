package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Stages at which a connected probe can fail after the driver's connect.
const (
	stageConnect = "connect"
	stageQuery   = "query"
	// stageSchema is a schema query's statement, run instead of SELECT 1.
	stageSchema = "schema"
)

// statementOf names what a query stage ran, for messages.
func statementOf(stage string) string {
	if stage == stageSchema {
		return "the schema query"
	}
	return "SELECT 1"
}

// reachableOnly checks a connection string without a user: it can only show
// that a TCP connection opens.
func (p *Prober) reachableOnly(ctx context.Context, d *dsn, t *dialTracker, addrs map[string][]netip.Addr) Result {
	var errs []error
	for _, e := range d.endpoints {
		for _, ip := range addrs[e.host] {
			c, err := t.dial(ctx, "tcp", netip.AddrPortFrom(ip, e.port).String())
			if err == nil {
				_ = c.Close()
				return Result{
					Reason:  ReasonNoUser,
					Message: plain(fmt.Sprintf("database url names no user; only checked that %s accepts connections", d.addr())),
					Fix:     inSource("add the user to ", " to have the login checked"),
				}
			}
			errs = append(errs, err)
		}
	}
	return p.classify(ctx, d, t, stageConnect, errors.Join(errs...))
}

// classify maps a failed connection or query to our own words. Driver error
// text is never used: only error types, codes and what the tracker saw.
func (p *Prober) classify(ctx context.Context, d *dsn, t *dialTracker, stage string, err error) Result {
	at := "database at " + d.addr()
	st := t.state()

	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgServerError(d, pgErr, stage)
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return mysqlServerError(d, myErr, stage)
	}
	var tooLong *pgproto3.ExceededMaxBodyLenErr
	if st.oversized || errors.As(err, &tooLong) {
		return deny(ReasonProbeFailed,
			fmt.Sprintf("%s sent more than %d KiB, which no %s server sends to a login and %s", at, maxMessageLen>>10, d.driver, statementOf(stage)),
			inSource("check the scheme, host and port in ", ""))
	}
	if stage == stageQuery || stage == stageSchema {
		if ctx.Err() != nil {
			return deny(ReasonQueryFailed,
				fmt.Sprintf("%s did not answer %s within %s", at, statementOf(stage), p.timeout),
				plain("check the database's load and health"))
		}
		return deny(ReasonQueryFailed,
			fmt.Sprintf("%s accepted the login but %s failed", at, statementOf(stage)),
			plain("check the database's health"))
	}
	if st.tlsRefused || errors.Is(err, mysql.ErrNoTLS) {
		return deny(ReasonTLSUnavailable,
			fmt.Sprintf("%s does not offer TLS but the connection string requires it (%s)", at, d.tlsParam),
			inSource("enable TLS on the database, or change the TLS setting in ", ""))
	}
	if detail, ok := tlsFailure(err); ok {
		return deny(ReasonTLSFailed,
			fmt.Sprintf("the TLS handshake with %s failed: %s (%s)", at, detail, d.tlsParam),
			inSource("check the TLS setting in ", " and the server certificate"))
	}
	timedOut := ctx.Err() != nil || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err)
	switch {
	case st.connected == 0 && timedOut:
		return notReachable(d, ReasonConnectTimeout, fmt.Sprintf("no connection within %s", p.timeout))
	case !timedOut && dropped(err, st) != "":
		how := dropped(err, st)
		if st.received == 0 {
			reason := ReasonConnectionClosed
			if how == droppedReset {
				reason = ReasonConnectionReset
			}
			return notReachable(d, reason, "connection "+how+" before the server sent anything")
		}
		return droppedConnection(d, st, how)
	case st.connected == 0 && errors.Is(err, syscall.ECONNREFUSED):
		return notReachable(d, ReasonConnectRefused, "connection refused")
	case st.connected == 0:
		return notReachable(d, ReasonUnreachable, "no route")
	case timedOut && st.received == 0:
		return notReachable(d, ReasonNoResponse, fmt.Sprintf("connection accepted, nothing received within %s", p.timeout))
	case st.tlsAccepted && !st.netReady && timedOut:
		return deny(ReasonNoResponse,
			fmt.Sprintf("the TLS handshake with %s did not finish within %s", at, p.timeout),
			inSource("check that the port in ", " is the database's port"))
	case st.tlsAccepted && !st.netReady:
		return deny(ReasonTLSFailed,
			fmt.Sprintf("the TLS handshake with %s failed (%s)", at, d.tlsParam),
			inSource("check the TLS setting in ", " and the server certificate"))
	case st.netReady && !timedOut && d.pg != nil && d.pg.ValidateConnect != nil:
		return deny(ReasonProbeFailed,
			fmt.Sprintf("%s accepted the login but does not meet the connection string's target_session_attrs", at),
			inSource("check target_session_attrs and the hosts in ", ""))
	case timedOut:
		return deny(ReasonNoResponse,
			fmt.Sprintf("%s accepted the connection but did not answer within %s", at, p.timeout),
			inSource("check that the port in ", " is the database's port, and the database's health"))
	default:
		return deny(ReasonProbeFailed,
			fmt.Sprintf("%s closed the connection or did not speak the %s protocol", at, d.driver),
			inSource("check the scheme, host and port in ", ""))
	}
}

// notReachable is the one denial for every failure before the database
// spoke its protocol. Refused, timed out, reset and silent read alike to the
// requester, so that the guard cannot be used to tell open ports from
// closed ones; detail, the precise cause, is for the guard's log.
func notReachable(d *dsn, reason Reason, detail string) Result {
	r := deny(reason,
		fmt.Sprintf("database at %s is not reachable", d.addr()),
		inSource("check that the cluster is in the database's Trusted sources, and that ",
			" names the database's private hostname and port"))
	r.Detail = detail
	return r
}

// Ways a connection can be dropped by the server (or something in between)
// before the probe finished.
const (
	droppedReset  = "reset"
	droppedClosed = "closed"
)

// dropped tells whether the connection was reset or closed, from the
// driver's error or, as the MySQL driver reports both as "invalid
// connection", from what the connection itself saw.
func dropped(err error, st trackerState) string {
	for _, e := range []error{err, st.ioErr} {
		switch {
		case e == nil:
		case errors.Is(e, syscall.ECONNRESET), errors.Is(e, syscall.EPIPE), errors.Is(e, syscall.ECONNABORTED):
			return droppedReset
		}
	}
	if st.connected == 0 {
		return ""
	}
	for _, e := range []error{err, st.ioErr} {
		if e != nil && (errors.Is(e, io.EOF) || errors.Is(e, io.ErrUnexpectedEOF)) {
			return droppedClosed
		}
	}
	return ""
}

// droppedConnection is the denial for a connection the database reset or
// closed after it began to answer and before the login finished, naming how far the handshake got.
func droppedConnection(d *dsn, st trackerState, how string) Result {
	at := "database at " + d.addr()
	var when string
	switch {
	case st.tlsAccepted && !st.tlsDone:
		when = "during the TLS handshake"
	default:
		when = "during the login"
	}
	if how == droppedReset {
		return deny(ReasonConnectionReset,
			fmt.Sprintf("%s reset the connection %s", at, when),
			plain("retry; if this repeats, check the database's logs and any proxy or firewall between the cluster and "+d.addr()))
	}
	return deny(ReasonConnectionClosed,
		fmt.Sprintf("%s closed the connection %s", at, when),
		inSource("retry once the database is up; if this repeats, check that the port in ", " is the database's port, and the database's logs"))
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsFailure recognises certificate and handshake errors.
func tlsFailure(err error) (string, bool) {
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		header    tls.RecordHeaderError
		alert     tls.AlertError
	)
	switch {
	case errors.As(err, &unknownCA):
		return "the server certificate is not signed by a trusted authority", true
	case errors.As(err, &hostname):
		return "the server certificate does not match the host name", true
	case errors.As(err, &invalid):
		return "the server certificate is invalid or expired", true
	case errors.As(err, &verify):
		return "the server certificate could not be verified", true
	case errors.As(err, &header):
		return "the server did not answer with TLS", true
	case errors.As(err, &alert):
		return "the server rejected the handshake", true
	}
	return "", false
}
