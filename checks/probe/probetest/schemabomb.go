package probetest

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// PostgresSchemaRowBomb is a "PostgreSQL server" that lets any user in
// without a password, then answers the first query, simple or extended, with
// a data row whose header declares 1 GiB and streams zeros as its body: the
// hostile answer to a schema query.
func PostgresSchemaRowBomb(c net.Conn) {
	defer func() { _ = c.Close() }()
	// The startup: SSLRequest answered N, then the startup message.
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		if bytes.Equal(hdr[:], pgSSLRequest) {
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[:4]))-8); err != nil {
			return
		}
		break
	}
	var out []byte
	for _, m := range []pgproto3.BackendMessage{
		&pgproto3.AuthenticationOk{},
		&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"},
		&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"},
		&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}},
		&pgproto3.ReadyForQuery{TxStatus: 'I'},
	} {
		var err error
		if out, err = m.Encode(out); err != nil {
			return
		}
	}
	if _, err := c.Write(out); err != nil {
		return
	}
	// Whatever the client sends first (Query, or Parse/Bind/Describe/
	// Execute/Sync), the answer is a row too long to hold.
	var typ [5]byte
	if _, err := io.ReadFull(c, typ[:]); err != nil {
		return
	}
	out = out[:0]
	for _, m := range []pgproto3.BackendMessage{&pgproto3.ParseComplete{}, &pgproto3.BindComplete{}} {
		var err error
		if out, err = m.Encode(out); err != nil {
			return
		}
	}
	out = append(out, 'D', 0x40, 0, 0, 0) // DataRow, 1 GiB
	if _, err := c.Write(out); err != nil {
		return
	}
	go func() { _, _ = io.Copy(io.Discard, c) }()
	stream(c)
}
