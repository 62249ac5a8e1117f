// Command soak runs cutover-guard for a while under mixed route load and
// faults, and checks that it stays correct and does not leak. `make soak`
// runs it (SOAK_DURATION=10m for longer); it is not part of `make test`.
//
// Everything runs on this machine against loopback: a local control plane
// (e2e/cluster) with the tutorial's objects (e2e/tutorial), the guard binary
// registered as the validating webhook, and the local PostgreSQL. Green's
// connection string goes through a fault-injecting proxy
// (internal/faultproxy) that cycles through forward, blackhole, reset and
// delay, while green flaps between Ready and not Ready. Clients switch the
// route between blue and green, edit its labels and annotations, and shift
// weights on a second route. Meanwhile a hostile tenant, in a namespace of
// its own, floods the guard with connection strings to a listener that
// never answers, sends the env-expansion bomb, and bursts more concurrent
// switches than --max-checks-per-namespace allows (hostile.go).
//
// At the end it prints requests, decisions (as the clients saw them and as
// the guard counted them), errors, latencies, and the guard's memory and
// goroutines, and exits 1 if an invariant broke: a switch to green allowed
// while green was known not to be Ready or its database known to fail, an
// edit denied, a client error that is not a verdict, the guard counting
// fewer decisions than the clients saw, goroutines that do not come back
// down once the load stops, an attack of the hostile tenant allowed, or a
// switch of the tutorial's tenant past the API server's deadline or refused
// for load. Timings are reported, never asserted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// settings are the command's flags.
type settings struct {
	duration time.Duration
	guardBin string
	workDir  string
	// switchers, editors and shifters are the concurrent clients of each
	// kind.
	switchers, editors, shifters int
	// editPause is each editor's and shifter's pause between requests.
	editPause time.Duration
	// flap is how long green stays in each state (Ready, not Ready).
	flap time.Duration
	// faultPhase is how long each database fault (and each forward phase
	// between them) lasts.
	faultPhase time.Duration
	// dbTimeout and dbCacheTTL are the guard's --db-timeout and
	// --db-cache-ttl.
	dbTimeout, dbCacheTTL time.Duration
	// postgres is the database green's connection string reaches through
	// the proxy.
	postgres string
	// guardArgs are further flags for the guard, after the soak's own.
	guardArgs []string
	verbose   bool
}

func main() {
	s, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctrllog.SetLogger(logr.Discard()) // the API server's warnings to clients are not printed
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, s)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func parseFlags(args []string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.DurationVar(&s.duration, "duration", 5*time.Minute, "how long the load runs (after the control plane and the guard are up)")
	fs.StringVar(&s.guardBin, "guard", "bin/cutover-guard", "the guard binary (make build)")
	fs.StringVar(&s.workDir, "work", ".cache/soak", "folder for the guard's log and certificate, kept after the run")
	fs.IntVar(&s.switchers, "switchers", 4, "concurrent clients switching the route between blue and green")
	fs.IntVar(&s.editors, "editors", 4, "concurrent clients editing the route's labels and annotations")
	fs.IntVar(&s.shifters, "shifters", 2, "concurrent clients shifting weights between blue and green on a second route")
	fs.DurationVar(&s.editPause, "edit-pause", 200*time.Millisecond, "each editor's and shifter's pause between requests (edits of the switched route make the API server re-run admission of a switch in flight)")
	fs.DurationVar(&s.flap, "flap", 8*time.Second, "how long green stays Ready, and then not Ready, in each cycle")
	fs.DurationVar(&s.faultPhase, "fault-phase", 20*time.Second, "how long each database fault, and each forward phase between faults, lasts")
	fs.DurationVar(&s.dbTimeout, "db-timeout", time.Second, "the guard's --db-timeout")
	fs.DurationVar(&s.dbCacheTTL, "db-cache-ttl", probe.DefaultCacheTTL, "the guard's --db-cache-ttl (its default)")
	fs.StringVar(&s.postgres, "postgres", "127.0.0.1:5432", "the local PostgreSQL (user postgres, trust, database test) behind the fault proxy")
	guardArgs := fs.String("guard-args", "", "further space-separated flags for the guard, after the soak's own (which they override): e.g. -guard-args=--zap-log-level=debug")
	fs.BoolVar(&s.verbose, "v", false, "print the control plane's progress and every fault and flap")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	s.guardArgs = strings.Fields(*guardArgs)
	var errs []error
	if s.duration <= 0 {
		errs = append(errs, errors.New("-duration must be positive, e.g. -duration=5m"))
	}
	if s.switchers < 1 || s.editors < 0 || s.shifters < 0 {
		errs = append(errs, errors.New("-switchers must be at least 1, -editors and -shifters at least 0"))
	}
	if s.flap <= 0 {
		errs = append(errs, errors.New("-flap must be positive, e.g. -flap=8s"))
	}
	if s.dbTimeout <= 0 || s.dbCacheTTL < 0 {
		errs = append(errs, errors.New("-db-timeout must be positive and -db-cache-ttl not negative"))
	}
	if min := s.faultWindowDelay() + time.Second; s.faultPhase < min {
		errs = append(errs, fmt.Errorf("-fault-phase %s is too short to tell a fault apart from a cached answer: use at least %s (db-cache-ttl + db-timeout + 2s)", s.faultPhase, min))
	}
	if len(errs) > 0 {
		return s, errors.Join(errs...)
	}
	wd, err := os.Getwd()
	if err != nil {
		return s, err
	}
	for _, p := range []*string{&s.workDir, &s.guardBin} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(wd, *p)
		}
	}
	return s, nil
}

// faultWindowDelay is how long after a fault is set every database probe
// the guard makes is sure to meet it: a probe begun just before the change
// may still succeed within --db-timeout, and its answer is reused for
// --db-cache-ttl, plus a second of margin.
func (s settings) faultWindowDelay() time.Duration {
	return s.dbCacheTTL + s.dbTimeout + time.Second
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s soak: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
