package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cutover-guard/cutover-guard/bench/gobench"
	"github.com/cutover-guard/cutover-guard/internal/tail"
)

// goBench runs `go test -bench` for one package, keeps the raw output in
// rawDir/name.txt (benchstat reads it), and returns the medians.
func goBench(ctx context.Context, s settings, name, pkg, pattern string) (map[string]gobench.Summary, string, error) {
	benchtime := "1s"
	if s.quick {
		benchtime = "200ms"
	}
	args := []string{"test", "-run", "^$", "-bench", pattern, "-benchmem", "-count", fmt.Sprint(s.runs), "-benchtime", benchtime, pkg}
	raw := filepath.Join(s.rawDir, name+".txt")
	logf("go %v", args)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = s.repo
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	if werr := os.WriteFile(raw, out.Bytes(), 0o644); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		return nil, "", fmt.Errorf("go test -bench %s: %w\n%s", pkg, err, tail.Lines(out.String(), 20))
	}
	results, err := gobench.Parse(bytes.NewReader(out.Bytes()))
	if err != nil {
		return nil, "", err
	}
	rel, _ := filepath.Rel(s.repo, raw)
	return gobench.Medians(results), fmt.Sprintf("go test -run '^$' -bench '%s' -benchmem -count %d -benchtime %s %s > %s", pattern, s.runs, benchtime, pkg, rel), nil
}

// benchRow is one benchmark in a table, with what it measures.
type benchRow struct{ name, what string }

func addBenchRows(t *table, m map[string]gobench.Summary, rows []benchRow, extra func(gobench.Summary) string) {
	for _, b := range rows {
		sum, ok := m[b.name]
		if !ok {
			t.add(b.name, b.what, "skipped", "", "", "")
			continue
		}
		cells := []string{b.name, b.what, dur(ns(sum.Metrics["ns/op"])),
			fmt.Sprintf("%.0f", sum.Metrics["B/op"]), fmt.Sprintf("%.0f", sum.Metrics["allocs/op"])}
		if extra != nil {
			cells = append(cells, extra(sum))
		}
		t.add(cells...)
	}
}

// inProcess is part 1: the handler without a network, decode to decision.
func inProcess(ctx context.Context, s settings, r *report) error {
	rows := []benchRow{
		{"DecodeReview", "controller-runtime's decode of the AdmissionReview and both HTTPRoutes (the old floor)"},
		{"DecodeReviewOnePass", "the fast path's one-pass decode of the same (the floor now)"},
		{"FastPath", "label-only update: decoded, no target, allowed without a read"},
		{"FastPathFullDecode", "the same through controller-runtime's decoder (before the fast path)"},
		{"SwitchPathDenied", "cutover to an unready green: every Kubernetes check, fake reader"},
		{"SwitchPathWarmDB", "cutover to a ready green: every check, fake reader, database answer cached"},
	}
	m, cmd, err := goBench(ctx, s, "inprocess", "./webhook/", "^Benchmark(DecodeReview|DecodeReviewOnePass|FastPath|FastPathFullDecode|SwitchPathDenied|SwitchPathWarmDB)$")
	if err != nil {
		return err
	}
	r.commands = append(r.commands, cmd)
	t := r.table("1. In process (go test -bench, package webhook)",
		"httptest request in, recorder out: no TLS, no network. Medians over the runs.",
		"benchmark", "what", "time/op", "B/op", "allocs/op")
	addBenchRows(t, m, rows, nil)
	if f, ok := m["FastPath"]; ok {
		d := ns(f.Metrics["ns/op"])
		r.goal("fast path in process", "< 50µs", dur(d), d < 50*time.Microsecond)
	}
	return nil
}

// databaseProbes is part 5: probes of the local PostgreSQL and MariaDB.
func databaseProbes(ctx context.Context, s settings, r *report) error {
	rows := []benchRow{
		{"DriverConnectPostgres", "pgx alone: connect, startup, SELECT 1, close (the floor)"},
		{"ProbeColdPostgres", "the guard's uncached check: resolve, private?, connect, auth, SELECT 1"},
		{"DriverConnectMariaDB", "go-sql-driver alone: connect, auth, ping, close (the floor)"},
		{"ProbeColdMariaDB", "the guard's uncached check against MariaDB"},
		{"ProbeColdPostgresScram", "the guard's uncached check, PostgreSQL asking a scram-sha-256 password (a throwaway server)"},
		{"ProbeColdPostgresTLS", "the same over TLS (sslmode=require)"},
		{"ProbeColdMariaDBPassword", "the guard's uncached check, MariaDB user with a password (a throwaway server)"},
		{"ProbeCached", "a check answered from the cache"},
		{"ProbeShared50Postgres", "50 concurrent switches to one target, cold cache: one shared probe"},
		{"ProbeShared50MariaDB", "the same against MariaDB"},
	}
	m, cmd, err := goBench(ctx, s, "dbprobes", "./checks/probe/", "^Benchmark(DriverConnect|ProbeCold|ProbeCached|ProbeShared50)")
	if err != nil {
		return err
	}
	r.commands = append(r.commands, cmd)
	t := r.table("5. Database probes (go test -bench, package checks/probe, loopback)",
		"PostgreSQL 127.0.0.1:5432 (trust) and MariaDB 127.0.0.1:3306 (root). Server-side connections are counted by a TCP proxy in front of the server: every connection it accepts is one the server had to serve. The Shared50 rows fail the run unless each batch of 50 opened exactly one.",
		"benchmark", "what", "time/op", "B/op", "allocs/op", "server connections")
	addBenchRows(t, m, rows, func(sum gobench.Summary) string {
		if c, ok := sum.Metrics["conns/op"]; ok {
			return fmt.Sprintf("%.2f per %0.f switches", c, sum.Metrics["switches/op"])
		}
		return ""
	})
	return nil
}
