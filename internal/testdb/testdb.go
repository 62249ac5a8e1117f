// Package testdb starts throwaway database servers and misbehaving TCP
// listeners on free loopback ports for tests: PostgreSQL with password
// (scram-sha-256) authentication, with or without TLS; MariaDB with a password
// user; a listener that accepts and never answers; a counting TCP proxy; a
// DNS server that answers NXDOMAIN or nothing.
// A server can be stopped and started again on the same port.
//
// Every server is torn down by t.Cleanup, also when the test fails: its
// process group is killed and its data directory removed. Readiness is
// polled against a deadline. Servers need the PostgreSQL and MariaDB server
// binaries; when they are missing the test is skipped, or failed with
// testenv.RequiredEnv=1.
package testdb

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"

	"github.com/cutover-guard/cutover-guard/internal/tail"
	"github.com/cutover-guard/cutover-guard/internal/testenv"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 60 * time.Second

// Server is a running database server.
type Server struct {
	// Host is the loopback address the server listens on.
	Host string
	// Port is its TCP port.
	Port int
	// User, Password and Database are a login that works, and its database.
	User, Password, Database string
	// CACert is the PEM certificate a TLS server presents (self-signed).
	CACert []byte

	dir  string   // data directory, removed at cleanup
	proc *process // the server process, killed at cleanup

	// For Stop and Start: how to start the process on a port, the signal
	// that stops it, and a login that shows it is ready.
	launch func(port int) *process
	stop   syscall.Signal
	login  func(ctx context.Context) error
}

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL builds a connection URL for the server with the password url-encoded:
// scheme "postgresql" or "mysql", query without the leading '?'.
func (s *Server) URL(scheme, query string) string {
	u := url.URL{
		Scheme:   scheme,
		User:     url.UserPassword(s.User, s.Password),
		Host:     s.Addr(),
		Path:     "/" + s.Database,
		RawQuery: query,
	}
	return u.String()
}

// PostgresOptions configures StartPostgres.
type PostgresOptions struct {
	// Password of the superuser "postgres"; default "pg-Secret-1".
	Password string
	// TLS turns on ssl with a self-signed certificate for 127.0.0.1/localhost.
	TLS bool
	// Database is created at start; default "app".
	Database string
}

// StartPostgres starts a PostgreSQL server with scram-sha-256 password
// authentication for every connection.
func StartPostgres(t testing.TB, o PostgresOptions) *Server {
	t.Helper()
	bin := postgresBin(t)
	if o.Password == "" {
		o.Password = "pg-Secret-1"
	}
	if o.Database == "" {
		o.Database = "app"
	}
	cred := credentialFor(t, "postgres")
	dir := makeDir(t, "testdb-pg-", cred)

	pwfile := filepath.Join(dir, "pwfile")
	writeFile(t, pwfile, []byte(o.Password+"\n"), 0o600, cred)
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=scram-sha-256", "--pwfile="+pwfile, "-N", "-E", "UTF8", "--locale=C")
	initdb.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	initdb.Env = cleanEnv()
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(data, "pg_hba.conf"), []byte(
		"local all all scram-sha-256\n"+
			"host all all 127.0.0.0/8 scram-sha-256\n"+
			"host all all ::1/128 scram-sha-256\n"), 0o600, cred)

	s := &Server{Host: "127.0.0.1", User: "postgres", Password: o.Password, Database: o.Database, dir: dir}
	var tlsArgs []string
	if o.TLS {
		certPEM, keyPEM := selfSigned(t)
		writeFile(t, filepath.Join(data, "server.crt"), certPEM, 0o600, cred)
		writeFile(t, filepath.Join(data, "server.key"), keyPEM, 0o600, cred)
		s.CACert = certPEM
		tlsArgs = []string{"-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"}
	}

	start := func(port int) *process {
		args := []string{"-D", data,
			"-c", "listen_addresses=127.0.0.1", "-c", "port=" + strconv.Itoa(port),
			"-c", "unix_socket_directories=" + dir,
			"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
			"-c", "shared_buffers=16MB", "-c", "max_connections=60", "-c", "max_wal_senders=0",
			"-c", "logging_collector=off", "-c", "log_min_messages=warning"}
		args = append(args, tlsArgs...)
		cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
		cmd.Env = cleanEnv()
		return startProcess(t, cmd, filepath.Join(dir, "server.log"), syscall.SIGQUIT)
	}
	ready := func(ctx context.Context, port int) error {
		s.Port = port
		admin := *s
		admin.Database = "postgres"
		conn, err := pgconn.Connect(ctx, admin.URL("postgresql", "sslmode=disable"))
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close(context.Background()) }()
		_, err = conn.Exec(ctx, "CREATE DATABASE "+quoteIdent(o.Database)).ReadAll()
		return err
	}
	s.proc = runUntilReady(t, start, ready)
	s.launch, s.stop = start, syscall.SIGQUIT
	s.login = func(ctx context.Context) error {
		admin := *s
		admin.Database = "postgres"
		conn, err := pgconn.Connect(ctx, admin.URL("postgresql", "sslmode=disable"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	}
	return s
}

// MariaDBOptions configures StartMariaDB.
type MariaDBOptions struct {
	// User and Password of a login allowed from 127.0.0.1 with all
	// privileges (like DigitalOcean's doadmin), and a Database; defaults
	// "app", "my-Secret-1", "app".
	User, Password, Database string
	// TLS turns on TLS with a self-signed certificate for
	// 127.0.0.1/localhost; off, the server offers none.
	TLS bool
}

// StartMariaDB starts a MariaDB server with a password user and a
// database, with TLS if asked.
func StartMariaDB(t testing.TB, o MariaDBOptions) *Server {
	t.Helper()
	install, server := mariadbBins(t)
	if o.User == "" {
		o.User = "app"
	}
	if o.Password == "" {
		o.Password = "my-Secret-1"
	}
	if o.Database == "" {
		o.Database = "app"
	}
	cred := credentialFor(t, "mysql")
	dir := makeDir(t, "testdb-maria-", cred)
	data := filepath.Join(dir, "data")
	common := []string{"--no-defaults", "--datadir=" + data,
		"--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M", "--skip-log-bin"}
	installCmd := exec.Command(install, append(slices.Clone(common),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")...)
	installCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	installCmd.Env = cleanEnv()
	if out, err := installCmd.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	initSQL := filepath.Join(dir, "init.sql")
	writeFile(t, initSQL, []byte(fmt.Sprintf(
		"CREATE DATABASE IF NOT EXISTS `%s`;\n"+
			"CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s';\n"+
			"GRANT ALL ON *.* TO '%s'@'%%';\n",
		o.Database, o.User, strings.ReplaceAll(o.Password, "'", "''"), o.User)), 0o600, cred)

	s := &Server{Host: "127.0.0.1", User: o.User, Password: o.Password, Database: o.Database, dir: dir}
	tlsArgs := []string{"--skip-ssl"}
	if o.TLS {
		certPEM, keyPEM := selfSigned(t)
		writeFile(t, filepath.Join(dir, "server.crt"), certPEM, 0o600, cred)
		writeFile(t, filepath.Join(dir, "server.key"), keyPEM, 0o600, cred)
		s.CACert = certPEM
		tlsArgs = []string{"--ssl-cert=" + filepath.Join(dir, "server.crt"), "--ssl-key=" + filepath.Join(dir, "server.key")}
	}
	start := func(port int) *process {
		args := append(slices.Clone(common),
			"--port="+strconv.Itoa(port), "--bind-address=127.0.0.1",
			"--socket="+filepath.Join(dir, "mysqld.sock"), "--pid-file="+filepath.Join(dir, "mysqld.pid"),
			"--skip-name-resolve", "--init-file="+initSQL, "--max-connections=100",
			"--performance-schema=OFF")
		args = append(args, tlsArgs...)
		cmd := exec.Command(server, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
		cmd.Env = cleanEnv()
		return startProcess(t, cmd, filepath.Join(dir, "server.log"), syscall.SIGKILL)
	}
	ready := func(ctx context.Context, port int) error {
		s.Port = port
		cfg := mysql.NewConfig()
		cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = s.User, s.Password, "tcp", s.Addr(), s.Database
		cfg.Logger = &mysql.NopLogger{}
		c, err := mysql.NewConnector(cfg)
		if err != nil {
			return err
		}
		conn, err := c.Connect(ctx)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	s.proc = runUntilReady(t, start, ready)
	s.launch, s.stop = start, syscall.SIGKILL
	s.login = func(ctx context.Context) error { return ready(ctx, s.Port) }
	return s
}

// Blackhole starts a listener that accepts connections and never answers.
// It returns its host:port.
func Blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// ClosedPort returns a loopback host:port nothing listens on.
func ClosedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Proxy forwards TCP connections to a target and counts them.
type Proxy struct {
	// Addr is the proxy's host:port.
	Addr    string
	accepts atomic.Int64
}

// Accepts is the number of connections the proxy has accepted.
func (p *Proxy) Accepts() int64 { return p.accepts.Load() }

// StartProxy starts a counting TCP proxy in front of target (host:port).
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Close() }()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer func() { _ = up.Close() }()
				track(c, true)
				track(up, true)
				defer track(c, false)
				defer track(up, false)
				copied := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); _ = up.Close(); copied <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); _ = c.Close(); copied <- struct{}{} }()
				<-copied
				<-copied
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// process is a running server process.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// startProcess starts cmd in its own process group with output to logPath,
// and registers its teardown: stop (a signal to the leader), then after 5 s
// SIGKILL to the whole group. The leader is reaped only after the group kill,
// so the group id cannot have been reused by then.
func startProcess(t testing.TB, cmd *exec.Cmd, logPath string, stop syscall.Signal) *process {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = logf.Close() }() // the child has its own descriptor
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", filepath.Base(cmd.Path), err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), log: logPath}
	go func() {
		// Wait for the exit without reaping.
		var info unix.Siginfo
		for {
			err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if err != unix.EINTR {
				break
			}
		}
		close(p.exited)
	}()
	t.Cleanup(func() { p.kill(stop) })
	return p
}

func (p *process) kill(stop syscall.Signal) {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.exited:
	default:
		_ = syscall.Kill(pgid, stop)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
		}
	}
	// Children (postgres backends) may outlive the leader; the unreaped
	// leader keeps the group id ours.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-p.exited
	_ = p.cmd.Wait()
}

func (p *process) logTail() string { return tail.File(p.log, 40) }

// runUntilReady starts the server on a free port and polls ready until it
// succeeds. If the process exits first (the port was taken meanwhile), it
// retries on another port.
func runUntilReady(t testing.TB, start func(port int) *process, ready func(ctx context.Context, port int) error) *process {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		p := start(port)
		var lastErr error
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			lastErr = ready(ctx, port)
			cancel()
			if lastErr == nil {
				return p
			}
			select {
			case <-p.exited:
			case <-time.After(50 * time.Millisecond): // poll interval
				if time.Now().Before(deadline) {
					continue
				}
				t.Fatalf("%s not ready after %s: %v\n%s", filepath.Base(p.cmd.Path), startTimeout, lastErr, p.logTail())
			}
			break
		}
		if attempt == 2 || time.Now().After(deadline) {
			t.Fatalf("%s exited during startup: %v\n%s", filepath.Base(p.cmd.Path), lastErr, p.logTail())
		}
		t.Logf("%s exited during startup, retrying on another port", filepath.Base(p.cmd.Path))
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// credentialFor returns the credential to run a server as: the named system
// user when running as root (servers refuse root), nil otherwise.
func credentialFor(t testing.TB, name string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		testenv.Unavailable(t, "running as root and there is no %q user to run the server as", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// makeDir creates a private directory owned by cred and removed at cleanup.
func makeDir(t testing.TB, prefix string, cred *syscall.Credential) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode, cred *syscall.Credential) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
}

// cleanEnv is the environment for server processes: no PG*/MYSQL* settings
// of the test's own environment.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "MYSQL") || strings.HasPrefix(kv, "MARIADB") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

func postgresBin(t testing.TB) string {
	t.Helper()
	candidates := []string{os.Getenv("TESTDB_PG_BIN")}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(matches) - 1; i >= 0; i-- {
		candidates = append(candidates, matches[i])
	}
	for _, dir := range candidates {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir
		}
	}
	testenv.Unavailable(t, "no PostgreSQL server binaries (set TESTDB_PG_BIN)")
	return ""
}

func mariadbBins(t testing.TB) (install, server string) {
	t.Helper()
	install, err := exec.LookPath("mariadb-install-db")
	if err != nil {
		testenv.Unavailable(t, "no mariadb-install-db")
	}
	for _, s := range []string{"/usr/sbin/mariadbd", "/usr/sbin/mysqld"} {
		if _, err := os.Stat(s); err == nil {
			return install, s
		}
	}
	if s, err := exec.LookPath("mariadbd"); err == nil {
		return install, s
	}
	testenv.Unavailable(t, "no mariadbd")
	return "", ""
}

// selfSigned returns a PEM certificate and key for 127.0.0.1 and localhost.
func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "testdb"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
