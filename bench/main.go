// Command bench measures what cutover-guard costs on the API server's write
// path and writes BENCHMARKS.md: in-process benchmarks, the guard's HTTPS
// server under load, route patches through a real API server with and
// without the guard registered, the guard at cluster scale, and database
// probes. `make bench` runs it; `BENCH_QUICK=1 make bench` (or -quick) runs a
// short version. Timings are recorded, never asserted.
//
// Everything runs on this machine against loopback: a local control plane
// (e2e/cluster), the local PostgreSQL and MariaDB, and the guard binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// settings are the command's flags.
type settings struct {
	quick    bool
	runs     int
	parts    map[string]bool
	out      string
	rawDir   string
	guardBin string
	repo     string
	verbose  bool
	// guardEnv is added to each guard's environment (e.g. GOGC=400).
	guardEnv []string
	// guardArgs are added to each guard's flags (e.g. --find-from=informers).
	guardArgs []string
	// scaleSizes are the app counts part 4 measures at; nil: the default.
	scaleSizes []int
	// profile is the length of part 3's profiled run; 0: none.
	profile time.Duration
}

// The parts, in the order they run.
var allParts = []string{"inprocess", "db", "https", "apiserver", "scale"}

func main() {
	s, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, s); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (settings, error) {
	s := settings{parts: map[string]bool{}}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quickDefault := os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0"
	fs.BoolVar(&s.quick, "quick", quickDefault, "a short run: fewer repetitions, shorter periods, a smaller scale step (default from $BENCH_QUICK)")
	fs.IntVar(&s.runs, "runs", 0, "repetitions of every measurement, reported as medians (default 5, quick 2)")
	parts := fs.String("parts", strings.Join(allParts, ","), "comma-separated parts to run: "+strings.Join(allParts, ", "))
	fs.StringVar(&s.out, "out", "BENCHMARKS.md", "report to update (the part between its bench markers); empty: print only")
	fs.StringVar(&s.rawDir, "raw", ".cache/bench", "folder for raw outputs (go test -bench output, guard logs)")
	fs.StringVar(&s.guardBin, "guard", "bin/cutover-guard", "the guard binary to measure (make build)")
	fs.BoolVar(&s.verbose, "v", false, "print progress in detail")
	guardEnv := fs.String("guard-env", "", "comma-separated KEY=VALUE pairs added to the guard's environment, e.g. GOGC=400 (recorded in the report)")
	guardArgs := fs.String("guard-args", "", "comma-separated flags added to every guard's command line, e.g. --find-from=informers (recorded in the report)")
	scaleSizes := fs.String("scale-sizes", "", "comma-separated app counts the scale part measures at, in increasing order, e.g. 0,2000 (default 0,400,2000; quick 0,200)")
	fs.DurationVar(&s.profile, "profile", 0, "end part 3 with this long a run of 8 clients switching the guarded routes while CPU profiles of the guard and kube-apiserver are taken (kept in -raw, top printed); 0: none")
	err := fs.Parse(args)
	if err != nil {
		return s, err
	}
	for _, p := range strings.Split(*parts, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		known := false
		for _, a := range allParts {
			known = known || a == p
		}
		if !known {
			return s, fmt.Errorf("-parts: unknown part %q (known: %s)", p, strings.Join(allParts, ", "))
		}
		s.parts[p] = true
	}
	for _, kv := range strings.Split(*guardEnv, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			if !strings.Contains(kv, "=") {
				return s, fmt.Errorf("-guard-env: %q is not KEY=VALUE", kv)
			}
			s.guardEnv = append(s.guardEnv, kv)
		}
	}
	for _, a := range strings.Split(*guardArgs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if !strings.HasPrefix(a, "--") {
				return s, fmt.Errorf("-guard-args: %q is not a --flag", a)
			}
			s.guardArgs = append(s.guardArgs, a)
		}
	}
	if s.scaleSizes, err = parseSizes(*scaleSizes); err != nil {
		return s, err
	}
	if s.runs <= 0 {
		s.runs = 5
		if s.quick {
			s.runs = 2
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return s, err
	}
	s.repo = wd
	for _, p := range []*string{&s.rawDir, &s.guardBin} {
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(wd, *p)
		}
	}
	return s, nil
}

// parseSizes parses -scale-sizes: app counts from 0 to 2,000, increasing.
func parseSizes(v string) ([]int, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 2000 {
			return nil, fmt.Errorf("-scale-sizes: %q is not an app count from 0 to 2000; give e.g. -scale-sizes=0,2000", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-scale-sizes: %d does not follow %d; give the counts in increasing order, e.g. -scale-sizes=0,2000", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, s settings) error {
	began := time.Now()
	if err := os.MkdirAll(s.rawDir, 0o755); err != nil {
		return err
	}
	r := &report{}
	describeMachine(r, s)
	r.commands = append(r.commands, commandLine(s))

	if s.parts["inprocess"] {
		if err := inProcess(ctx, s, r); err != nil {
			return fmt.Errorf("in-process benchmarks: %w", err)
		}
	}
	if s.parts["db"] {
		if err := databaseProbes(ctx, s, r); err != nil {
			return fmt.Errorf("database probes: %w", err)
		}
	}
	if s.parts["https"] || s.parts["apiserver"] || s.parts["scale"] {
		if err := withLab(ctx, s, r); err != nil {
			return err
		}
	}
	r.setEnv("load average (1/5/15 min) at the end", loadAvg())
	r.setEnv("duration of the run", time.Since(began).Round(time.Second).String())

	r.text(os.Stdout)
	if s.out != "" {
		if err := r.writeMarkdown(s.out); err != nil {
			return err
		}
		logf("wrote %s", s.out)
	}
	return nil
}

func withLab(ctx context.Context, s settings, r *report) (err error) {
	l, err := startLab(ctx, s, r)
	if err != nil {
		return fmt.Errorf("starting the local control plane and the guard: %w", err)
	}
	defer func() {
		if stopErr := l.stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	if s.parts["https"] {
		if err := httpsLoad(ctx, l, r); err != nil {
			return fmt.Errorf("HTTPS load: %w", err)
		}
	}
	if s.parts["apiserver"] {
		if err := throughAPIServer(ctx, l, r); err != nil {
			return fmt.Errorf("through the API server: %w", err)
		}
	}
	if s.parts["scale"] {
		if err := atScale(ctx, l, r); err != nil {
			return fmt.Errorf("scale: %w", err)
		}
	}
	return nil
}

func commandLine(s settings) string {
	var parts []string
	for _, p := range allParts {
		if s.parts[p] {
			parts = append(parts, p)
		}
	}
	c := "go run ./bench -runs=" + fmt.Sprint(s.runs) + " -parts=" + strings.Join(parts, ",")
	if len(s.guardEnv) > 0 {
		c += " -guard-env=" + strings.Join(s.guardEnv, ",")
	}
	if len(s.guardArgs) > 0 {
		c += " -guard-args=" + strings.Join(s.guardArgs, ",")
	}
	if len(s.scaleSizes) > 0 && s.parts["scale"] {
		c += " -scale-sizes=" + strings.Trim(strings.Join(strings.Fields(fmt.Sprint(s.scaleSizes)), ","), "[]")
	}
	if s.profile > 0 && s.parts["apiserver"] {
		c += " -profile=" + s.profile.String()
	}
	if s.quick {
		c += " -quick"
	}
	return c + "   # make bench" + map[bool]string{true: " with BENCH_QUICK=1", false: ""}[s.quick]
}

// describeMachine records what the numbers were measured on.
func describeMachine(r *report, s settings) {
	r.setEnv("date (UTC)", time.Now().UTC().Format("2006-01-02 15:04"))
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	r.setEnv("machine", fmt.Sprintf("%s, %d cores, %s RAM, %s/%s, kernel %s", cpu, runtime.NumCPU(), memTotal(), runtime.GOOS, runtime.GOARCH, kernel()))
	r.setEnv("Go", runtime.Version())
	commit := "unknown"
	if out, err := exec.Command("git", "-C", s.repo, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", s.repo, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			commit += " with uncommitted changes"
		}
	}
	r.setEnv("commit", commit)
	r.setEnv("load average (1/5/15 min) at the start", loadAvg())
	mode := fmt.Sprintf("full: %d runs per measurement, medians reported", s.runs)
	if s.quick {
		mode = fmt.Sprintf("quick (BENCH_QUICK=1): %d runs per measurement, shorter periods; medians reported", s.runs)
	}
	r.setEnv("mode", mode)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " / ")
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kib int64
			_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kib)
			return fmt.Sprintf("%.0f GiB", float64(kib)/(1<<20))
		}
	}
	return "?"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
